"""Provider selection: SECRETS_PROVIDER names one of these, or a dotted path to a SecretProvider.

Only the chosen provider's module is imported, and it imports its SDK on first use.
"""
from __future__ import annotations

import inspect
from importlib import import_module
from typing import Any

from secrets_app.exceptions import ProviderMisconfigured
from secrets_app.providers.base import SecretProvider, SecretValue

PROVIDERS = {
    "local": "secrets_app.providers.local.LocalProvider",
    "aws": "secrets_app.providers.aws.AwsProvider",
    "vault": "secrets_app.providers.vault.VaultProvider",
    "azure": "secrets_app.providers.azure.AzureProvider",
}

__all__ = ["PROVIDERS", "SecretProvider", "SecretValue", "get_provider"]


def get_provider(name: str, **options: Any) -> SecretProvider:
    """Build the provider called ``name`` (or found at a dotted path) with ``options``."""
    path = PROVIDERS.get(name, name)
    if "." not in path:
        raise ProviderMisconfigured(
            f"Unknown SECRETS_PROVIDER {name!r}: use one of {', '.join(PROVIDERS)} or a dotted path."
        )
    module_name, _, class_name = path.rpartition(".")
    try:
        provider_class = getattr(import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ProviderMisconfigured(f"SECRETS_PROVIDER {name!r} cannot be imported ({error}).") from error
    if not (isinstance(provider_class, type) and issubclass(provider_class, SecretProvider)):
        raise ProviderMisconfigured(f"SECRETS_PROVIDER {name!r} is not a SecretProvider.")
    _check_options(name, provider_class, options)
    return provider_class(**options)


def _check_options(name: str, provider_class: type[SecretProvider], options: dict[str, Any]) -> None:
    """A misspelt option is a configuration error naming it, never a TypeError from ``__init__``
    (the way django-storages treats unknown storage options)."""
    parameters = inspect.signature(provider_class.__init__).parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return
    accepted = {parameter.name for parameter in parameters if parameter.name != "self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ProviderMisconfigured(
            f"SECRETS_PROVIDER {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"it accepts {', '.join(sorted(accepted)) or 'none'}."
        )
