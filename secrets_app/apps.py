import atexit
import logging
import sys

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

logger = logging.getLogger("secrets_app")


class SecretsConfig(AppConfig):
    name = "secrets_app"
    # The migrations were made with BigAutoField ids: a host project\'s DEFAULT_AUTO_FIELD must not change them.
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = _("Secrets")

    def ready(self) -> None:
        # The access log was buffered while settings loaded (no ORM yet); from now on it is
        # written after requests, Celery tasks and at exit, never on the get_secret hot path.
        from django.core import checks
        from django.core.signals import request_finished

        from secrets_app import default_manager
        from secrets_app.checks import check_provider, check_provider_in_use, check_setting_types
        from secrets_app.conf import app_settings
        from secrets_app.services import secrets_access_flush_at_exit, secrets_access_flush_soon

        checks.register(check_provider)
        checks.register(check_provider_in_use)
        checks.register(check_setting_types)
        request_finished.connect(secrets_access_flush_soon, dispatch_uid="secrets_access_flush")
        atexit.register(secrets_access_flush_at_exit)
        default_manager.send_alerts()

        if "celery" in sys.modules:
            from celery.signals import task_postrun

            task_postrun.connect(secrets_access_flush_soon, weak=False, dispatch_uid="secrets_access_flush")

        redis_url = app_settings.SECRETS_REDIS_URL or app_settings.REDIS_URL
        if redis_url:
            prefix = app_settings.SECRETS_REDIS_PREFIX or f"{app_settings.CACHE_KEY_PREFIX}:secrets"
            default_manager.start_rotation_listener(redis_url=redis_url, prefix=prefix)
