"""The secret manager: a lock-free cache in front of a chain of providers, with stale-if-error.

It is built from small parts, each in its own module:
- ``secrets_app.providers.chain.ProviderChain``: the configured provider, then the fallback
  (environment and .env), and the back-off after provider errors;
- ``secrets_app.access_log.AccessLog``: what happened, buffered until the database can take it;
- ``secrets_app.alerts.DeniedAccessAlerts``: mails to ADMINS when a provider denies access;
- ``secrets_app.fingerprints.Fingerprinter``: per-install fingerprints of values.

Why the cache is shaped this way:
- A cached read is one dict lookup and one clock read, no lock: ``get_secret`` sits on hot paths
  (every request may read a token), so a hit must cost about a microsecond.
- A miss takes a per-name lock, so concurrent misses of one secret make one provider call, and
  misses of different secrets do not wait for each other.
- While the provider fails, the last good value is served (up to ``max_stale``) before the
  fallback's: a value the provider gave is the one the operator meant.
- Forked children (gunicorn, Celery prefork) get fresh locks and provider clients: a lock held by a
  parent thread that does not exist in the child would otherwise never be released.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from django.views.decorators.debug import sensitive_variables

from secrets_app.access_log import (  # noqa: F401 - re-exported: callers import them from here
    DENIED,
    FALLBACK,
    FETCHED,
    HIT,
    MISSING,
    ROTATED,
    STALE,
    AccessEvent,
    AccessLog,
    secrets_actor,
)
from secrets_app.alerts import DeniedAccessAlerts
from secrets_app.exceptions import SecretNotConfigured, SecretNotFound
from secrets_app.fingerprints import Fingerprinter
from secrets_app.providers.base import SecretProvider, SecretValue
from secrets_app.providers.chain import ProviderChain, Resolution

logger = logging.getLogger("secrets_app")

_NO_DEFAULT: Any = object()
_monotonic = time.monotonic


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
    doubles without patching; they are chained in a ``ProviderChain`` that this cache wraps.
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
        self.access_log = AccessLog(max_events)
        self.alerts = DeniedAccessAlerts()
        #: Every secret this process asked for: name -> required (asked for without a default).
        self.known: dict[str, bool] = {}
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

    @property
    def provider(self) -> SecretProvider:
        return self.chain.primary

    @property
    def fallback(self) -> SecretProvider | None:
        return self.chain.fallback

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

        provider = provider if provider is not None else LocalProvider()
        if fallback is None and not isinstance(provider, LocalProvider):
            fallback = LocalProvider()
        self.chain = ProviderChain(provider, fallback, retry_max=retry_max)
        self.ttl = float(ttl)
        self.max_stale = float(max_stale)
        self.fingerprint = Fingerprinter(key=fingerprint_key, key_file=fingerprint_key_file)
        for name in required:
            self.known[name] = True
        self._entries = {}

    def _make_locks(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

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
        self.alerts.reset_lock()
        self.chain.reset()
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
                hits = self.access_log.hits
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
        """Ask the chain and build the entry to cache."""
        resolution = self.chain.resolve(name, now)
        if resolution.denied:
            self.alerts.raise_alert(provider=self.provider.name, name=name, message=resolution.failure)
            self._record(name, DENIED, detail=resolution.failure)
        if resolution.failure:
            return self._degraded(name, previous, now, resolution)
        secret = resolution.secret
        if secret is None:
            # A miss is cached for the TTL too: optional secrets must not cost a provider call each read.
            entry = CacheEntry(value=None, expires_at=now + self.ttl, fetched_at=now, source="",
                               status=MISSING, sources_tried=resolution.sources_tried)
            self._store(name, entry, MISSING)
            return entry
        if resolution.from_fallback:
            logger.warning("Secret %s is not in %s; using the value from %s.", name, self.provider.name, secret.source)
            entry = self._entry_from(secret, now, status=FALLBACK)
            self._store(name, entry, FALLBACK, detail=f"not in {self.provider.name}")
            return entry
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
        self.access_log.changed.add(name)
        self._record(name, outcome, detail=detail)

    def _degraded(self, name: str, previous: CacheEntry | None, now: float, resolution: Resolution) -> CacheEntry:
        """The provider cannot answer: serve the last good value (bounded), else the fallback's."""
        until = self.chain.retry_at(now)
        reason = resolution.failure
        if previous is not None and previous.value is not None and now < previous.stale_until:
            logger.warning(
                "Secret %s: serving the value fetched %.0f s ago from %s (stale-if-error: %s).",
                name, now - previous.fetched_at, previous.source, reason,
            )
            # Served from the hot path until the next retry is due, never past SECRETS_MAX_STALE.
            previous.expires_at = min(until, previous.stale_until)
            previous.status = STALE
            self.access_log.changed.add(name)
            self._record(name, STALE, detail=reason)
            return previous
        if resolution.secret is not None:
            logger.warning("Secret %s: %s; fell back to %s.", name, reason, resolution.secret.source)
            entry = self._entry_from(resolution.secret, now, status=FALLBACK, expires_at=until)
            self._store(name, entry, FALLBACK, detail=reason)
            return entry
        logger.error("Secret %s cannot be resolved: %s, and no fallback holds it.", name, reason)
        entry = CacheEntry(
            value=None, expires_at=until, fetched_at=now, source="",
            status=DENIED if resolution.denied else MISSING, sources_tried=resolution.sources_tried,
        )
        self._entries[name] = entry
        self.access_log.changed.add(name)
        if not resolution.denied:
            self._record(name, MISSING, detail=reason)
        return entry

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
            self.chain.retry_now()
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

    # Access log and alerts -------------------------------------------------------------------
    def _record(self, name: str, outcome: str, *, detail: str = "", actor: str | None = None) -> None:
        self.access_log.record(name, provider=self.provider.name, outcome=outcome, detail=detail, actor=actor)

    def record_rotation(self, name: str, *, actor: str, detail: str) -> None:
        self._record(name, ROTATED, actor=actor, detail=detail)

    def send_alerts(self) -> None:
        """E-mail pending alerts to ADMINS once settings are loaded (held until then)."""
        self.alerts.send()

    def drain(self) -> tuple[list[AccessEvent], dict[str, int], dict[str, CacheEntry]]:
        """Take the buffered events, the hit counts and the entries changed since the last drain."""
        events, hits, changed = self.access_log.drain()
        entries = {name: self._entries[name] for name in changed if name in self._entries}
        return events, hits, entries

    def pending(self) -> bool:
        return self.access_log.pending()

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
