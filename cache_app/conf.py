"""The settings cache_app reads, each with its default: ``from cache_app.conf import app_settings``.

``app_settings.HEALTH_CHECK_TIMEOUT`` is ``settings.HEALTH_CHECK_TIMEOUT`` when the project sets it,
else the default below (the same as opsdesk's own project, ops_project/settings.py, uses when the
environment says nothing). Values are read at each access, so ``override_settings`` and
pytest-django's ``settings`` fixture keep working. Bad values are reported by ``manage.py check``
(cache_app/checks.py).

REDIS_URL and the CACHE_* settings are turned into CACHES by the project (ops_project/settings.py,
through cache_app.configuration); here they tell the app whether Redis is there and what its keys
start with. Without REDIS_URL the app runs on whatever cache the project configured.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings

#: The collectors /metrics exposes in opsdesk's own project; elsewhere those of the installed apps.
OPSDESK_METRICS_COLLECTORS = (
    "backups_app.metrics.BackupCollector",
    "backups_app.metrics.ProcessCollector",
    "secrets_app.metrics.SecretsCollector",
    "cache_app.metrics.RedisCollector",
)


def _installed_collectors() -> list[str]:
    from django.apps import apps

    return [path for path in OPSDESK_METRICS_COLLECTORS if apps.is_installed(path.split(".", 1)[0])]


#: Every setting of the app and its default; a callable is called at each access.
DEFAULTS: dict[str, Any] = {
    "REDIS_URL": "",
    "CACHE_KEY_PREFIX": "opsdesk",
    "CACHE_SOCKET_CONNECT_TIMEOUT": 0.5,
    "CACHE_SOCKET_TIMEOUT": 0.5,
    "CACHE_CIRCUIT_BREAKER_SECONDS": 5.0,
    "CACHE_ERROR_LOG_INTERVAL": 60.0,
    "CACHE_DEFAULT_TIMEOUT": 300,
    "HEALTH_CHECK_TIMEOUT": 0.8,
    "HEALTH_TOKEN": "",
    # /health's checks and who may see its details (cache_app.health), as dotted paths; None: what
    # each installed app contributes.
    "HEALTH_CHECKS": None,
    "HEALTH_AUTHENTICATORS": None,
    "METRICS_ALLOWED_IPS": lambda: ["127.0.0.1", "::1"],
    "METRICS_COLLECTORS": _installed_collectors,
    # Celery's: no broker means jobs run inline, and /health reports the broker as not configured.
    "CELERY_BROKER_URL": "",
    "CELERY_TASK_DEFAULT_QUEUE": "celery",
}


class AppSettings:
    """Attribute access to the settings in DEFAULTS, read from django.conf.settings at each access."""

    def __init__(self, defaults: dict[str, Any]):
        self._defaults = defaults

    def __getattr__(self, name: str) -> Any:
        if name not in self._defaults:
            raise AttributeError(f"cache_app has no setting {name}")
        if hasattr(settings, name):
            return getattr(settings, name)
        default = self._defaults[name]
        return default() if callable(default) else default

    def __dir__(self):
        return [*super().__dir__(), *self._defaults]


app_settings = AppSettings(DEFAULTS)
