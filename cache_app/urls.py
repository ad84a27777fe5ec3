"""Routes of cache_app (/health and /health/, both answered: load balancers differ)."""
from django.urls import path

from cache_app import views

app_name = "cache_app"

urlpatterns = [
    path("health", views.health, name="health"),
    path("health/", views.health, name="health-slash"),
    path("metrics", views.metrics, name="metrics"),
]
