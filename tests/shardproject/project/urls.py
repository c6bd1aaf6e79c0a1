from django.urls import path

from tenants import views

urlpatterns = [
    path("orders/", views.orders),
    path("customers/<uuid:customer>/orders/", views.customer_orders),
]
