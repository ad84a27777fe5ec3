"""The secret manager: a lock-free cache in front of one provider, with stale-if-error, fallback,
rotation invalidation and a buffered access log.

Why it is shaped this way:
- A cached read is one dict lookup and one clock read, no lock: ``get_secret`` sits on hot paths
  (every request may read a token), so a hit must cost about a microsecond.
- A miss takes a per-name lock, so concurrent misses of one secret make one provider call, and
  misses of different secrets do not wait for each other.
- Settings call ``get_secret`` before the app registry exists: nothing here imports models. What
  happened is kept in memory (events, aggregated hit counts, known secrets) and written to the
  database by ``secrets_app.services.secrets_access_flush`` once apps are ready.
- Forked children (gunicorn, Celery prefork) get fresh locks and provider clients: a lock held by a
  parent thread that does not exist in the child would otherwise never be released.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import hashlib
import hmac
import logging
import os
import random
import secrets as secrets_module
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.views.decorators.debug import sensitive_variables

from secrets_app.exceptions import (
    AccessDenied,
    ProviderUnavailable,
    SecretNotConfigured,
    SecretNotFound,
)
from secrets_app.providers.base import SecretProvider, SecretValue

logger = logging.getLogger("secrets_app")

_NO_DEFAULT: Any = object()
_monotonic = time.monotonic

# Outcomes recorded in the access log (secrets_app.models.SecretAccess.Outcome mirrors them).
FETCHED, HIT, FALLBACK, STALE, DENIED, MISSING, ROTATED = (
    "fetched", "hit", "fallback", "stale", "denied", "missing", "rotated",
)

#: Who is reading: a user name set by the admin or a command; the process otherwise.
_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar("secrets_actor", default=None)


@contextlib.contextmanager
def secrets_actor(actor: str) -> Iterator[None]:
    """Attribute the secret reads inside the block to ``actor`` in the access log."""
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def _process_actor() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class CacheEntry:
    """What is known about one secret in this process. ``value`` is None for a cached miss."""

    __slots__ = ("value", "expires_at", "fetched_at", "resolved_at", "source", "version",
                 "fingerprint", "status", "sources_tried", "stale_until")

    def __init__(self, *, value: str | None, expires_at: float, fetched_at: float, source: str,
                 version: str = "", fingerprint: str = "", status: str = FETCHED,
                 sources_tried: tuple[str, ...] = (), stale_until: float = 0.0) -> None:
        self.value = value
        self.expires_at = expires_at
        self.fetched_at = fetched_at
        self.resolved_at = datetime.now(timezone.utc)
        self.source = source
        self.version = version
        self.fingerprint = fingerprint
        self.status = status
        self.sources_tried = sources_tried
        # Until when this value may be served while the provider fails (SECRETS_MAX_STALE).
        self.stale_until = stale_until

    def __repr__(self) -> str:
        return f"<CacheEntry source={self.source!r} version={self.version!r} status={self.status!r}>"


@dataclass(frozen=True)
class AccessEvent:
    """One line of the access log, before it reaches the database. Never holds a value."""

    name: str
    provider: str
    outcome: str
    actor: str
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    count: int = 1
    detail: str = ""


@dataclass(frozen=True)
class SecretStatus:
    """The result of resolving one secret for ``secrets_check`` and the admin; no value."""

    name: str
    required: bool
    source: str
    status: str
    version: str = ""
    fingerprint: str = ""
    detail: str = ""


_managers: weakref.WeakSet[SecretManager] = weakref.WeakSet()


class SecretManager:
    """Resolve secrets by name through a provider, cached, with fallback to the environment.

    ``provider`` is the configured store; ``fallback`` (environment and .env) answers when the
    provider cannot, or does not hold the secret. Both are passed in, so tests use real servers or
    doubles without patching.
    """

    def __init__(
        self,
        provider: SecretProvider | None = None,
        *,
        fallback: SecretProvider | None = None,
        ttl: float = 300.0,
        max_stale: float = 24 * 3600.0,
        retry_max: float = 60.0,
        fingerprint_key: bytes | None = None,
        fingerprint_key_file: str | os.PathLike | None = None,
        required: tuple[str, ...] | list[str] = (),
        max_events: int = 10_000,
    ) -> None:
        self._entries: dict[str, CacheEntry] = {}
        self._hits: dict[str, int] = {}
        self._events: collections.deque[AccessEvent] = collections.deque(maxlen=max_events)
        self._alerts: collections.deque[tuple[str, str]] = collections.deque(maxlen=100)
        self._last_alert: dict[str, float] = {}
        self._dirty: set[str] = set()
        #: Every secret this process asked for: name -> required (asked for without a default).
        self.known: dict[str, bool] = {}
        self._failures = 0
        self._backoff_until = 0.0
        self.rotation_listener = None
        self.rotation_redis_url = ""
        self.rotation_prefix = ""
        self._make_locks()
        self.configure(
            provider=provider, fallback=fallback, ttl=ttl, max_stale=max_stale, retry_max=retry_max,
            fingerprint_key=fingerprint_key, fingerprint_key_file=fingerprint_key_file, required=required,
        )
        _managers.add(self)

    def __repr__(self) -> str:
        return f"<SecretManager provider={self.provider.name!r} cached={len(self._entries)}>"

    # Configuration ----------------------------------------------------------------------------
    def configure(
        self,
        *,
        provider: SecretProvider | None = None,
        fallback: SecretProvider | None = None,
        ttl: float = 300.0,
        max_stale: float = 24 * 3600.0,
        retry_max: float = 60.0,
        fingerprint_key: bytes | None = None,
        fingerprint_key_file: str | os.PathLike | None = None,
        required: tuple[str, ...] | list[str] = (),
    ) -> None:
        """Replace the provider and options; forgets every cached value."""
        from secrets_app.providers.local import LocalProvider

        self.provider = provider if provider is not None else LocalProvider()
        if fallback is None and not isinstance(self.provider, LocalProvider):
            fallback = LocalProvider()
        self.fallback = fallback
        self.ttl = float(ttl)
        self.max_stale = float(max_stale)
        self.retry_max = float(retry_max)
        self._fingerprint_key = fingerprint_key
        self._fingerprint_key_file = Path(fingerprint_key_file) if fingerprint_key_file else None
        for name in required:
            self.known[name] = True
        self._entries = {}
        self._failures = 0
        self._backoff_until = 0.0

    def _make_locks(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._alert_lock = threading.Lock()

    def _lock_for(self, name: str) -> threading.Lock:
        lock = self._locks.get(name)
        if lock is None:
            with self._locks_guard:
                lock = self._locks.setdefault(name, threading.Lock())
        return lock

    def after_fork_in_child(self) -> None:
        """Rebuild what a fork cannot share: locks (possibly held by a thread that is gone),
        provider clients (sockets shared with the parent) and the rotation listener thread."""
        self._make_locks()
        self.provider.reset()
        if self.fallback is not None:
            self.fallback.reset()
        if self.rotation_listener is not None:
            self.rotation_listener = None
            self.start_rotation_listener(redis_url=self.rotation_redis_url, prefix=self.rotation_prefix)

    # The hot path ----------------------------------------------------------------------------
    def get(self, name: str, default: Any = _NO_DEFAULT) -> str:
        """The value of secret ``name``.

        Raises ``SecretNotFound`` (``SecretNotConfigured``, an ImproperlyConfigured, while
        settings load) naming the sources tried, unless ``default`` is given.
        """
        entry = self._entries.get(name)
        if entry is not None and entry.expires_at > _monotonic():
            value = entry.value
            if value is not None:
                hits = self._hits
                hits[name] = hits.get(name, 0) + 1
                return value
            if default is not _NO_DEFAULT:
                return default  # a cached miss of an optional secret: no lock either
        return self._resolve(name, default)

    # The miss path ---------------------------------------------------------------------------
    @sensitive_variables()
    def _resolve(self, name: str, default: Any) -> Any:
        if default is _NO_DEFAULT:
            self.known[name] = True
        else:
            self.known.setdefault(name, False)
        with self._lock_for(name):
            entry = self._entries.get(name)
            now = _monotonic()
            if entry is None or entry.expires_at <= now:
                entry = self._refresh(name, entry, now)
        return self._deliver(name, entry, default)

    @sensitive_variables()
    def _deliver(self, name: str, entry: CacheEntry, default: Any) -> Any:
        if entry.value is not None:
            return entry.value
        if default is not _NO_DEFAULT:
            return default
        from django.conf import settings

        # settings.configured is False while the settings module itself is executing.
        error_class = SecretNotFound if settings.configured else SecretNotConfigured
        raise error_class(name, entry.sources_tried)

    @sensitive_variables()
    def _refresh(self, name: str, previous: CacheEntry | None, now: float) -> CacheEntry:
        """Ask the provider (unless it is backing off) and build the entry to cache."""
        provider_name = self.provider.name
        if now < self._backoff_until:
            return self._degraded(name, previous, now, reason=f"{provider_name} backing off after errors")
        try:
            secret = self.provider.get(name)
        except SecretNotFound as error:
            self._provider_answered()
            return self._missing_at_provider(name, now, tried=list(error.sources_tried) or [provider_name])
        except AccessDenied as error:
            self._provider_failed(now)
            self._alert(name, str(error))
            self._record(name, DENIED, detail=str(error))
            return self._degraded(name, previous, now, reason=str(error), denied=True)
        except ProviderUnavailable as error:
            self._provider_failed(now)
            return self._degraded(name, previous, now, reason=str(error))
        self._provider_answered()
        entry = self._entry_from(secret, now, status=FETCHED)
        self._store(name, entry, FETCHED)
        return entry

    def _entry_from(self, secret: SecretValue, now: float, *, status: str, expires_at: float | None = None) -> CacheEntry:
        return CacheEntry(
            value=secret.value, expires_at=now + self.ttl if expires_at is None else expires_at,
            fetched_at=now, source=secret.source, version=secret.version,
            fingerprint=self.fingerprint(secret.value), status=status, stale_until=now + self.max_stale,
        )

    def _store(self, name: str, entry: CacheEntry, outcome: str, detail: str = "") -> None:
        self._entries[name] = entry
        self._dirty.add(name)
        self._record(name, outcome, detail=detail)

    def _missing_at_provider(self, name: str, now: float, *, tried: list[str]) -> CacheEntry:
        secret, fallback_tried = self._from_fallback(name)
        if secret is not None:
            logger.warning("Secret %s is not in %s; using the value from %s.", name, self.provider.name, secret.source)
            entry = self._entry_from(secret, now, status=FALLBACK)
            self._store(name, entry, FALLBACK, detail=f"not in {self.provider.name}")
            return entry
        # A miss is cached for the TTL too: optional secrets must not cost a provider call each read.
        entry = CacheEntry(value=None, expires_at=now + self.ttl, fetched_at=now, source="",
                           status=MISSING, sources_tried=tuple(tried + fallback_tried))
        self._store(name, entry, MISSING)
        return entry

    def _degraded(self, name: str, previous: CacheEntry | None, now: float, *, reason: str,
                  denied: bool = False) -> CacheEntry:
        """The provider cannot answer: serve the last good value (bounded), else the fallback."""
        until = max(self._backoff_until, now + 1.0)
        if previous is not None and previous.value is not None and now < previous.stale_until:
            logger.warning(
                "Secret %s: serving the value fetched %.0f s ago from %s (stale-if-error: %s).",
                name, now - previous.fetched_at, previous.source, reason,
            )
            # Served from the hot path until the next retry is due, never past SECRETS_MAX_STALE.
            previous.expires_at = min(until, previous.stale_until)
            previous.status = STALE
            self._dirty.add(name)
            self._record(name, STALE, detail=reason)
            return previous
        secret, fallback_tried = self._from_fallback(name)
        if secret is not None:
            logger.warning("Secret %s: %s; fell back to %s.", name, reason, secret.source)
            entry = self._entry_from(secret, now, status=FALLBACK, expires_at=until)
            self._store(name, entry, FALLBACK, detail=reason)
            return entry
        logger.error("Secret %s cannot be resolved: %s, and no fallback holds it.", name, reason)
        entry = CacheEntry(
            value=None, expires_at=until, fetched_at=now, source="",
            status=DENIED if denied else MISSING,
            sources_tried=(f"{self.provider.name} ({'denied' if denied else 'unavailable'})", *fallback_tried),
        )
        self._entries[name] = entry
        self._dirty.add(name)
        if not denied:
            self._record(name, MISSING, detail=reason)
        return entry

    def _from_fallback(self, name: str) -> tuple[SecretValue | None, list[str]]:
        if self.fallback is None:
            return None, []
        try:
            return self.fallback.get(name), []
        except SecretNotFound as error:
            return None, list(error.sources_tried)
        except (AccessDenied, ProviderUnavailable) as error:
            logger.warning("Secret %s: the fallback failed too (%s).", name, error)
            return None, ["environment", ".env"]

    def _provider_answered(self) -> None:
        self._failures = 0
        self._backoff_until = 0.0

    def _provider_failed(self, now: float) -> None:
        # Exponential back-off with jitter, so a fleet does not retry in lock-step.
        self._failures += 1
        delay = min(self.retry_max, 2.0 ** (self._failures - 1))
        self._backoff_until = now + delay * random.uniform(0.9, 1.1)

    # Rotation and invalidation ---------------------------------------------------------------
    def invalidate(self, name: str | None = None) -> None:
        """Make the next read of ``name`` (every name when None) ask the provider again.

        The entry is kept for stale-if-error; only its freshness ends.
        """
        entries = self._entries
        targets = list(entries.values()) if name is None else [entries.get(name)]
        for entry in targets:
            if entry is not None:
                entry.expires_at = 0.0

    @sensitive_variables()
    def refresh(self, name: str) -> CacheEntry:
        """Fetch ``name`` from the provider now (used after a rotation and by secrets_check)."""
        with self._lock_for(name):
            self._backoff_until = 0.0
            previous = self._entries.get(name)
            return self._refresh(name, previous, _monotonic())

    def start_rotation_listener(self, *, redis_url: str, prefix: str) -> None:
        """Listen for rotations announced through Redis (see secrets_app.rotation)."""
        from secrets_app.rotation import RotationListener

        self.rotation_redis_url, self.rotation_prefix = redis_url, prefix
        if self.rotation_listener is not None and self.rotation_listener.is_alive():
            return
        self.rotation_listener = RotationListener(manager=self, redis_url=redis_url, prefix=prefix)
        self.rotation_listener.start()

    def stop_rotation_listener(self) -> None:
        listener, self.rotation_listener = self.rotation_listener, None
        if listener is not None:
            listener.stop()

    # Fingerprints ----------------------------------------------------------------------------
    def _key(self) -> bytes:
        if self._fingerprint_key is None:
            self._fingerprint_key = _load_fingerprint_key(self._fingerprint_key_file)
        return self._fingerprint_key

    @sensitive_variables()
    def fingerprint(self, value: str) -> str:
        """First 8 hex digits of an HMAC-SHA256 keyed per install: tells versions apart, reveals
        nothing of the value (no prefix, no unkeyed hash that could be looked up)."""
        return hmac.new(self._key(), value.encode("utf-8"), hashlib.sha256).hexdigest()[:8]

    # Access log and alerts -------------------------------------------------------------------
    def _record(self, name: str, outcome: str, *, detail: str = "", actor: str | None = None) -> None:
        self._events.append(AccessEvent(
            name=name, provider=self.provider.name, outcome=outcome,
            actor=actor or _actor.get() or _process_actor(), detail=detail[:500],
        ))

    def record_rotation(self, name: str, *, actor: str, detail: str) -> None:
        self._record(name, ROTATED, actor=actor, detail=detail)

    def _alert(self, name: str, message: str) -> None:
        logger.error("ALERT: secret provider %s denied access to %s: %s", self.provider.name, name, message)
        with self._alert_lock:
            now = _monotonic()
            # One e-mail per secret per hour: a denied credential is retried with back-off, and
            # every retry must not become a mail.
            if now - self._last_alert.get(name, -3600.0) < 3600.0:
                return
            self._last_alert[name] = now
            self._alerts.append((name, message))
        self.send_alerts()

    def send_alerts(self) -> None:
        """E-mail pending alerts to ADMINS once settings are loaded (held until then)."""
        from django.conf import settings

        if not settings.configured or not self._alerts:
            return
        from django.core.mail import mail_admins

        while self._alerts:
            try:
                name, message = self._alerts.popleft()
            except IndexError:
                return
            mail_admins(
                subject=f"Secret provider denied access to {name}",
                message=(f"The secret provider {self.provider.name!r} refused to give {name} to "
                         f"{_process_actor()}:\n\n{message}\n\nThe last good value (if any) is served "
                         "until SECRETS_MAX_STALE; check the credentials and policy of this install."),
                fail_silently=True,
            )

    def drain(self) -> tuple[list[AccessEvent], dict[str, int], dict[str, CacheEntry]]:
        """Take the buffered events, the hit counts and the entries changed since the last drain."""
        events = []
        while True:
            try:
                events.append(self._events.popleft())
            except IndexError:
                break
        hits, self._hits = self._hits, {}
        dirty, self._dirty = self._dirty, set()
        entries = {name: self._entries[name] for name in dirty if name in self._entries}
        return events, hits, entries

    def pending(self) -> bool:
        return bool(self._events or self._hits or self._dirty)

    # Status ----------------------------------------------------------------------------------
    def status(self, name: str) -> SecretStatus:
        """Resolve ``name`` from the provider now and say where it came from (never the value)."""
        entry = self.refresh(name)
        required = self.known.get(name, False)
        return SecretStatus(
            name=name, required=required, source=entry.source or "-", status=entry.status,
            version=entry.version, fingerprint=entry.fingerprint,
            detail="" if entry.value is not None else "tried: " + ", ".join(entry.sources_tried),
        )

    def cached(self) -> dict[str, CacheEntry]:
        return dict(self._entries)


def _load_fingerprint_key(path: Path | None) -> bytes:
    """The per-install key: read from ``path``, created there (0600) on first use."""
    if path is not None:
        try:
            return bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as error:
            logger.warning("Fingerprint key %s is unreadable (%s); using a per-process key.", path, error)
            return secrets_module.token_bytes(32)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            key = secrets_module.token_bytes(32)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(key.hex())
            return key
        except FileExistsError:
            return bytes.fromhex(path.read_text().strip())  # another process created it first
        except OSError as error:
            logger.warning("Fingerprint key %s cannot be created (%s); using a per-process key.", path, error)
    return secrets_module.token_bytes(32)


def _after_fork_in_child() -> None:
    for manager in list(_managers):
        manager.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

#: The process-wide manager behind ``secrets_app.get_secret``; settings.py configures it.
default_manager = SecretManager()


def secrets_configure(*, provider: str | SecretProvider = "local", provider_options: dict | None = None,
                      env_file: str | os.PathLike | None = None, process_environment=None,
                      ttl: float = 300.0, max_stale: float = 24 * 3600.0, retry_max: float = 60.0,
                      fingerprint_key_file: str | os.PathLike | None = None,
                      required: tuple[str, ...] | list[str] = ()) -> SecretManager:
    """Configure the process-wide manager (settings.py calls this before reading any secret)."""
    from secrets_app.providers import get_provider
    from secrets_app.providers.local import LocalProvider

    local = LocalProvider(env_file=env_file, process_environment=process_environment)
    if isinstance(provider, SecretProvider):
        chosen = provider
    elif provider == "local":
        chosen = local
    else:
        chosen = get_provider(provider, **(provider_options or {}))
    default_manager.configure(
        provider=chosen, fallback=None if chosen is local else local, ttl=ttl, max_stale=max_stale,
        retry_max=retry_max, fingerprint_key_file=fingerprint_key_file, required=required,
    )
    return default_manager
