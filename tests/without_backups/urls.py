"""URLs of the project without backups_app: /health only (cache_app's)."""
from django.urls import include, path

urlpatterns = [path("", include("cache_app.urls"))]
