"""Errors raised by secrets_app. Messages name secrets and sources, never values or credentials."""
from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class SecretsError(Exception):
    """Base class of every secrets_app error."""


class SecretNotFound(SecretsError, LookupError):
    """No source holds the secret. The message names the secret and every source tried."""

    def __init__(self, name: str, sources_tried: list[str] | tuple[str, ...] = ()) -> None:
        self.name = name
        self.sources_tried = tuple(sources_tried)
        tried = ", ".join(self.sources_tried) or "no source"
        super().__init__(f"Secret {name!r} was not found (tried: {tried}).")


class SecretNotConfigured(SecretNotFound, ImproperlyConfigured):
    """A secret that settings need is missing: raised while settings load, so Django reports it
    the way it reports every other configuration mistake."""


class ProviderUnavailable(SecretsError):
    """The provider could not answer (timeout, connection refused, 5xx). Worth retrying later."""


class AccessDenied(SecretsError):
    """The provider refused: the credentials opsdesk runs with may not read or write that secret."""


class ProviderMisconfigured(SecretsError, ImproperlyConfigured):
    """The provider's configuration is incomplete or invalid (unknown provider, missing URL)."""


class RotationRefused(SecretsError):
    """The new value was refused before anything was written (empty, multi-line, shadowed)."""
