from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CacheConfig(AppConfig):
    name = "cache_app"
    # The migrations were made with BigAutoField ids: a host project\'s DEFAULT_AUTO_FIELD must not change them.
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = _("Cache and health")
    # What this app contributes to /health (cache_app.health; settings.HEALTH_CHECKS overrides the
    # whole list): its own database and Redis, listed before every other app's checks.
    health_checks = ["cache_app.health.DatabaseCheck", "cache_app.health.RedisCheck"]
    health_authenticators = ["cache_app.health.staff_session", "cache_app.health.health_token"]

    def ready(self) -> None:
        from django.core import checks
        from django.core.signals import setting_changed

        from cache_app.backends.circuit import breakers_reset
        from cache_app.checks import check_health, check_metrics, check_redis, check_setting_types

        checks.register(check_redis)
        checks.register(check_setting_types)
        checks.register(check_metrics)
        checks.register(check_health)

        def forget_breakers(*, setting: str, **kwargs) -> None:
            # A new CACHES means new servers: an old outage must not keep the new one skipped.
            if setting == "CACHES":
                breakers_reset()

        setting_changed.connect(forget_breakers, weak=False, dispatch_uid="cache_app.forget_breakers")
