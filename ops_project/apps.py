"""Application configurations of the project itself."""
import axes.apps
from django.contrib.admin.apps import AdminConfig
from django.utils.translation import gettext_lazy as _


class OpsAdminConfig(AdminConfig):
    """django.contrib.admin with opsdesk's site (ops_project.admin.OpsAdminSite) as admin.site."""

    default_site = "ops_project.admin.OpsAdminSite"


class AxesConfig(axes.apps.AppConfig):
    """django-axes with a translated section name: its own config has none ("Axes" in every language)."""

    verbose_name = _("Login lockouts")
