from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SecretsConfig(AppConfig):
    name = "secrets_app"
    verbose_name = _("Secrets")
