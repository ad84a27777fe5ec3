"""URL map: the admin, /health and the REST API."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("backups_app.api.urls")),
    path("", include("cache_app.urls")),
]

# A body over DATA_UPLOAD_MAX_MEMORY_SIZE is 413, not 400 (ops_project/views.py).
handler400 = "ops_project.views.bad_request"
