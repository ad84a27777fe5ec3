"""The interface every secret provider implements.

A provider knows one secret store and nothing else: it reads the current value of a secret, writes
a new version, and says whether it can be reached. Caching, stale-if-error, fallback, rotation
broadcast and the access log belong to ``secrets_app.manager``, so every provider gets them the
same way.

Rules every provider follows:
- SDKs are imported inside the provider's methods, never at module level: a process on the
  default provider must not pay for boto3, hvac or the Azure SDK;
- every network call has a short connect and read timeout and no long retry loop: the manager
  decides when to retry (back-off) and what to serve meanwhile (stale value, fallback);
- SDK errors are translated into ``SecretNotFound``, ``AccessDenied`` or ``ProviderUnavailable``
  whose messages never carry a value or a credential;
- credentials are constructor arguments kept out of ``repr()``; they are never stored in the
  database and never returned by ``options()``;
- ``reset()`` drops clients and connections: it runs in a forked child (gunicorn, Celery prefork),
  where sockets and locks inherited from the parent must not be reused.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class SecretValue:
    """One resolved secret. The value never appears in ``repr()`` or ``str()``."""

    value: str = field(repr=False)
    #: Where it came from: the provider's name, "environment", ".env" or "file".
    source: str
    #: The provider's version id when it has one (AWS VersionId, Vault version, Key Vault version).
    version: str = ""

    def __str__(self) -> str:
        return f"<secret from {self.source}>"


class SecretProvider(abc.ABC):
    """Read and write secrets in one store, by name.

    ``get`` raises ``SecretNotFound`` when the store answers that the secret does not exist,
    ``AccessDenied`` when it refuses, and ``ProviderUnavailable`` when it cannot answer.
    """

    #: The value of SECRETS_PROVIDER that selects this provider.
    name: ClassVar[str]

    @abc.abstractmethod
    def get(self, secret_name: str) -> SecretValue:
        """The current value of ``secret_name``. Never returns an empty value."""

    @abc.abstractmethod
    def set(self, secret_name: str, value: str) -> str:
        """Store ``value`` as the new current version of ``secret_name``; return the version id."""

    @abc.abstractmethod
    def options(self) -> dict[str, Any]:
        """The non-secret configuration shown to staff (region, address, mount). No credentials."""

    def check(self) -> str:
        """Prove the store can be reached with the configured credentials; return a short
        description. Raises like ``get``. The default reads a secret that need not exist."""
        from secrets_app.exceptions import SecretNotFound

        try:
            self.get("OPSDESK_CONNECTION_CHECK")
        except SecretNotFound:
            pass
        return f"{self.name}: reachable"

    def reset(self) -> None:  # noqa: B027 - optional hook: most providers keep nothing to forget
        """Forget clients and connections (after a fork). The next call builds new ones."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.options()!r}>"
