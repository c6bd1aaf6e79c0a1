from books import views
from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("books/", views.books),
    path("books/<int:pk>/", views.book),
    path("books/new/", views.new_book),
    path("books/twice/", views.write_twice),
    path("session/remember/", views.remember),
    path("session/recall/", views.recall),
]
