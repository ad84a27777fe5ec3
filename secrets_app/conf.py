"""The settings secrets_app reads, each with its default: ``from secrets_app.conf import app_settings``.

``app_settings.SECRETS_CACHE_TTL`` is ``settings.SECRETS_CACHE_TTL`` when the project sets it, else
the default below (the same as opsdesk's own project, ops_project/settings.py, uses when the
environment says nothing). Values are read at each access, so ``override_settings`` and
pytest-django's ``settings`` fixture keep working. Bad values are reported by ``manage.py check``
(secrets_app/checks.py).

The provider settings (SECRETS_PROVIDER and its options) are read where the process-wide manager is
configured: ops_project/settings.py calls ``secrets_configure`` with them while it loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings


def _project_root() -> Path:
    # BASE_DIR is Django's convention (opsdesk's settings set it); a host project may not.
    return Path(getattr(settings, "BASE_DIR", None) or Path.cwd())


#: Every setting of the app and its default; a callable is called at each access.
DEFAULTS: dict[str, Any] = {
    "SECRETS_PROVIDER": "local",
    "SECRETS_CACHE_TTL": 300,
    "SECRETS_MAX_STALE": 24 * 3600,
    "SECRETS_RETRY_MAX": 60,
    "SECRETS_TIMEOUT": 3.0,
    "SECRETS_ENV_FILE": lambda: _project_root() / ".env",
    "SECRETS_REQUIRED": list,
    "SECRETS_FINGERPRINT_KEY_FILE": lambda: _project_root() / "var" / "secrets_fingerprint.key",
    "SECRETS_REDIS_URL": "",
    "SECRETS_REDIS_PREFIX": "",
    "SECRETS_ACCESS_LOG_FLUSH_SECONDS": 60,
    "SECRETS_AWS_REGION": "",
    "SECRETS_AWS_ENDPOINT_URL": "",
    "SECRETS_AWS_PREFIX": "",
    "SECRETS_VAULT_ADDR": "",
    "SECRETS_VAULT_MOUNT": "secret",
    "SECRETS_VAULT_PATH": "opsdesk",
    "SECRETS_AZURE_VAULT_URL": "",
    # cache_app's settings, read for the rotation broadcast: empty SECRETS_REDIS_URL means REDIS_URL,
    # empty SECRETS_REDIS_PREFIX means CACHE_KEY_PREFIX:secrets.
    "REDIS_URL": "",
    "CACHE_KEY_PREFIX": "opsdesk",
}


class AppSettings:
    """Attribute access to the settings in DEFAULTS, read from django.conf.settings at each access."""

    def __init__(self, defaults: dict[str, Any]):
        self._defaults = defaults

    def __getattr__(self, name: str) -> Any:
        if name not in self._defaults:
            raise AttributeError(f"secrets_app has no setting {name}")
        if hasattr(settings, name):
            return getattr(settings, name)
        default = self._defaults[name]
        return default() if callable(default) else default

    def __dir__(self):
        return [*super().__dir__(), *self._defaults]


app_settings = AppSettings(DEFAULTS)
