"""System checks of the secrets settings (`manage.py check`), registered in SecretsConfig.ready().

A bad value (an unknown provider, a string where a number of seconds belongs, a Redis URL of another
scheme) is one line naming the setting, instead of a traceback when the first secret is read.
Messages never echo a value: a URL may carry a password.
"""
from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning
from django.utils.module_loading import import_string

from secrets_app.conf import app_settings
from secrets_app.providers import PROVIDERS
from secrets_app.providers.base import SecretProvider

#: Numbers of seconds and the least value each may take (True: must be above zero).
SECONDS = {
    "SECRETS_CACHE_TTL": False,
    "SECRETS_MAX_STALE": False,
    "SECRETS_RETRY_MAX": True,
    "SECRETS_TIMEOUT": True,
    "SECRETS_ACCESS_LOG_FLUSH_SECONDS": False,
}
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "sentinel://")


def check_provider(app_configs=None, **kwargs) -> list[Error]:
    """SECRETS_PROVIDER names a built-in provider or a dotted path to a SecretProvider subclass."""
    provider = app_settings.SECRETS_PROVIDER
    if isinstance(provider, SecretProvider) or provider in PROVIDERS:
        return []
    if not isinstance(provider, str) or "." not in provider:
        return [Error(
            f"SECRETS_PROVIDER must be one of {', '.join(PROVIDERS)} or a dotted path to a SecretProvider.",
            hint="local reads the environment and .env; see docs/SECRETS_MANAGER_GUIDE.md for the others.",
            id="secrets_app.E001",
        )]
    try:
        provider_class = import_string(provider)
    except ImportError:
        provider_class = None
    if not (isinstance(provider_class, type) and issubclass(provider_class, SecretProvider)):
        return [Error(
            f"SECRETS_PROVIDER {provider!r} is not an importable SecretProvider subclass.",
            hint="Name a class derived from secrets_app.providers.base.SecretProvider, e.g. myapp.secrets.MyProvider.",
            id="secrets_app.E002",
        )]
    return []


def check_provider_in_use(app_configs=None, **kwargs) -> list[Warning]:
    """A SECRETS_PROVIDER set in the settings is the provider get_secret actually reads.

    The provider is chosen by secrets_configure() in settings.py (opsdesk's own settings pass
    SECRETS_PROVIDER to it). A project that sets SECRETS_PROVIDER = "vault" and never calls
    secrets_configure would read its secrets from the environment and .env while the setting says Vault.
    """
    from secrets_app import default_manager

    wanted = getattr(settings, "SECRETS_PROVIDER", None)
    if not isinstance(wanted, str) or not wanted:
        return []  # unset, or a provider instance; check_provider reports the malformed ones
    provider = default_manager.provider
    in_use = f"{type(provider).__module__}.{type(provider).__qualname__}" if "." in wanted else provider.name
    if in_use == wanted:
        return []
    return [Warning(
        f"SECRETS_PROVIDER is {wanted!r} but get_secret reads from the {provider.name!r} provider.",
        hint="Call secrets_configure(provider=..., provider_options=...) in settings.py before the first "
             "get_secret (docs/INSTALLING.md, \"Secrets in settings.py\").",
        id="secrets_app.W001",
    )]


def check_setting_types(app_configs=None, **kwargs) -> list[Error]:
    """Numbers of seconds are numbers in range; SECRETS_REQUIRED is a list of names; Redis URLs parse."""
    errors: list[Error] = []
    for name, above_zero in SECONDS.items():
        value = getattr(app_settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(Error(f"{name} must be a number of seconds.",
                                hint=f"Correct {name} in the settings (or the environment).", id="secrets_app.E003"))
        elif value < 0 or (above_zero and value == 0):
            errors.append(Error(f"{name} must be {'above zero' if above_zero else 'zero or more'}.",
                                hint=f"Set {name} to a number of seconds.", id="secrets_app.E004"))
    required = app_settings.SECRETS_REQUIRED
    if isinstance(required, str) or not isinstance(required, (list, tuple)) or not all(
            isinstance(name, str) and name for name in required):
        errors.append(Error(
            "SECRETS_REQUIRED must be a list of secret names.",
            hint='e.g. SECRETS_REQUIRED = ["SECRET_KEY", "DATABASE_PASSWORD"]', id="secrets_app.E005",
        ))
    redis_url = app_settings.SECRETS_REDIS_URL
    if redis_url and (not isinstance(redis_url, str) or not redis_url.lower().startswith(REDIS_SCHEMES)):
        errors.append(Error(
            "SECRETS_REDIS_URL must start with redis://, rediss://, unix:// or sentinel://.",
            hint="Leave it empty to use REDIS_URL.", id="secrets_app.E006",
        ))
    for name in ("SECRETS_REDIS_PREFIX", "SECRETS_AWS_REGION", "SECRETS_AWS_ENDPOINT_URL", "SECRETS_AWS_PREFIX",
                 "SECRETS_VAULT_ADDR", "SECRETS_VAULT_MOUNT", "SECRETS_VAULT_PATH", "SECRETS_AZURE_VAULT_URL"):
        if not isinstance(getattr(app_settings, name), str):
            errors.append(Error(f"{name} must be a string.", hint=f"Correct {name} in the settings.",
                                id="secrets_app.E007"))
    return errors
