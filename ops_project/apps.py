"""Application configurations of the project itself."""
from django.contrib.admin.apps import AdminConfig


class OpsAdminConfig(AdminConfig):
    """django.contrib.admin with opsdesk's site (ops_project.admin.OpsAdminSite) as admin.site."""

    default_site = "ops_project.admin.OpsAdminSite"
