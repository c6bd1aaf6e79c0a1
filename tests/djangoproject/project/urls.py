from django.urls import path

from shop import views

urlpatterns = [
    path("items/", views.items),
    path("items/<int:pk>/", views.item),
    path("async/items/", views.async_items),
    path("async/items/<int:pk>/", views.async_item),
    path("atomic/", views.atomic_view),
    path("pinned/", views.pinned_view),
    path("where/", views.where),
    path("eventual/", views.eventual_view),
    path("bounded/", views.bounded_async_view),
    path("legacy/", views.legacy_customers),
]
