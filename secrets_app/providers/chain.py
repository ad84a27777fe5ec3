"""The configured provider first, then the fallback (environment and .env).

The cache in ``secrets_app.manager`` wraps this chain, the way Django's ``cached_db`` session
store wraps the database store: the chain says what the stores answered, the cache decides what
to serve (a fresh value, the last good one while the provider fails, or the fallback's).
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from secrets_app.exceptions import AccessDenied, ProviderUnavailable, SecretNotFound
from secrets_app.providers.base import SecretProvider, SecretValue

logger = logging.getLogger("secrets_app")


@dataclass(frozen=True)
class Resolution:
    """What the chain found for one secret; ``secret`` is None when no store holds it."""

    secret: SecretValue | None = None
    #: Where the answer came from the fallback store rather than the configured provider.
    from_fallback: bool = False
    #: Why the configured provider could not answer (unavailable, denied, backing off); "" if it did.
    failure: str = ""
    denied: bool = False
    sources_tried: tuple[str, ...] = ()


class ProviderChain(SecretProvider):
    """Ask ``primary``; when it does not hold a secret or cannot answer, ask ``fallback``.

    The chain owns the back-off: after a failure ``primary`` is not asked again before an
    exponentially growing delay (with jitter, at most ``retry_max`` seconds) has passed, so a
    fleet of processes does not hammer a provider that is down, in lock-step.
    """

    def __init__(self, primary: SecretProvider, fallback: SecretProvider | None = None, *, retry_max: float = 60.0) -> None:
        self.primary = primary
        self.fallback = fallback
        self.retry_max = float(retry_max)
        self._failures = 0
        self._backoff_until = 0.0

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.primary.name

    # SecretProvider --------------------------------------------------------------------------
    def get(self, secret_name: str) -> SecretValue:
        resolution = self.resolve(secret_name, time.monotonic())
        if resolution.secret is None:
            raise SecretNotFound(secret_name, resolution.sources_tried)
        return resolution.secret

    def set(self, secret_name: str, value: str) -> str:
        return self.primary.set(secret_name, value)

    def options(self) -> dict[str, Any]:
        return self.primary.options()

    def check(self) -> str:
        return self.primary.check()

    def reset(self) -> None:
        self.primary.reset()
        if self.fallback is not None:
            self.fallback.reset()

    # Resolution ------------------------------------------------------------------------------
    def resolve(self, secret_name: str, now: float) -> Resolution:
        if now < self._backoff_until:
            return self._fall_back(secret_name, failure=f"{self.primary.name} backing off after errors")
        try:
            secret = self.primary.get(secret_name)
        except SecretNotFound as error:
            self._answered()
            fallback_secret, fallback_tried = self._from_fallback(secret_name)
            tried = list(error.sources_tried) or [self.primary.name]
            return Resolution(secret=fallback_secret, from_fallback=fallback_secret is not None,
                              sources_tried=tuple(tried + fallback_tried))
        except AccessDenied as error:
            self._failed(now)
            return self._fall_back(secret_name, failure=str(error), denied=True)
        except ProviderUnavailable as error:
            self._failed(now)
            return self._fall_back(secret_name, failure=str(error))
        self._answered()
        return Resolution(secret=secret, sources_tried=(self.primary.name,))

    def retry_at(self, now: float) -> float:
        """When the configured provider will be asked again (at least a second from ``now``)."""
        return max(self._backoff_until, now + 1.0)

    def retry_now(self) -> None:
        self._backoff_until = 0.0

    def _fall_back(self, secret_name: str, *, failure: str, denied: bool = False) -> Resolution:
        secret, fallback_tried = self._from_fallback(secret_name)
        state = "denied" if denied else "unavailable"
        return Resolution(secret=secret, from_fallback=secret is not None, failure=failure, denied=denied,
                          sources_tried=(f"{self.primary.name} ({state})", *fallback_tried))

    def _from_fallback(self, secret_name: str) -> tuple[SecretValue | None, list[str]]:
        if self.fallback is None:
            return None, []
        try:
            return self.fallback.get(secret_name), []
        except SecretNotFound as error:
            return None, list(error.sources_tried)
        except (AccessDenied, ProviderUnavailable) as error:
            logger.warning("Secret %s: the fallback failed too (%s).", secret_name, error)
            return None, ["environment", ".env"]

    def _answered(self) -> None:
        self._failures = 0
        self._backoff_until = 0.0

    def _failed(self, now: float) -> None:
        self._failures += 1
        delay = min(self.retry_max, 2.0 ** (self._failures - 1))
        self._backoff_until = now + delay * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not a secret
