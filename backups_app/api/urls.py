"""REST API routes under /api/v1/ (see docs/API.md).

The fixed paths come before `backup/<name>` so that "list", "create", ... are never read as names;
a GET on `backup/create` is therefore a 405, not a lookup. The last pattern turns every other path
into a JSON 404.
"""
from django.urls import path, re_path

from backups_app.api import views

app_name = "api"

urlpatterns = [
    path("backup/create", views.BackupCreateView.as_view(), name="backup-create"),
    path("backup/list", views.BackupListView.as_view(), name="backup-list"),
    path("backup/restore", views.BackupRestoreView.as_view(), name="backup-restore"),
    path("backup/cleanup", views.BackupCleanupView.as_view(), name="backup-cleanup"),
    path("backup/<str:name>", views.BackupDetailView.as_view(), name="backup-detail"),
    path("backup/<str:name>/download", views.BackupDownloadView.as_view(), name="backup-download"),
    path("backup/<str:name>/cancel", views.BackupCancelView.as_view(), name="backup-cancel"),
    path("restore/<int:restore_id>/cancel", views.RestoreCancelView.as_view(), name="restore-cancel"),
    path("schema", views.SchemaView.as_view(), name="schema"),
    re_path(r"^", views.UnknownEndpointView.as_view(), name="unknown"),
]
