from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CacheConfig(AppConfig):
    name = "cache_app"
    verbose_name = _("Cache and health")
