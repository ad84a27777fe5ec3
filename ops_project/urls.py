"""URL map: the admin, /health and the REST API."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("backups_app.api.urls")),
    path("", include("cache_app.urls")),
]
