"""django-redis behind a circuit breaker: Redis down never breaks a page and costs ~nothing per request.

Configured as the default cache when REDIS_URL is set (see ops_project/settings.py). Differences from
django-redis' own IGNORE_EXCEPTIONS:

- after one failure the process stops calling Redis for CACHE_CIRCUIT_BREAKER_SECONDS, so a Redis
  that hangs costs one socket timeout per process and interval, not one per request;
- errors are logged once per CACHE_ERROR_LOG_INTERVAL, not once per call;
- `add()` answers False while Redis is down, so a lock taken with `cache.add()` is never believed
  acquired (docs/FAULTS.md: lock-while-redis-down);
- `clear()` deletes the keys under this cache's KEY_PREFIX with SCAN + UNLINK instead of FLUSHDB, so
  a Redis shared with other applications keeps their keys;
- when writes or deletes were dropped during an outage, the first success afterwards clears the
  app's keys in the background: an invalidation that never reached Redis (a new backup, a logout in
  a cached_db session) must not let the old value come back.
"""
from __future__ import annotations

import functools
import logging
import threading
from typing import Any
from urllib.parse import urlsplit

import redis
from django.core.exceptions import ImproperlyConfigured
from django_redis.cache import RedisCache
from django_redis.compressors.zlib import ZlibCompressor
from django_redis.exceptions import ConnectionInterrupted

from cache_app.backends.circuit import CircuitBreaker, breaker_for
from cache_app.exceptions import CacheUnavailable

logger = logging.getLogger("cache_app.redis")

# Failures that mean "the server is not answering", as opposed to a bug in the call (wrong type...).
OUTAGE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

CLEAR_BATCH_SIZE = 500


def redacted_location(url: str) -> str:
    """scheme://host:port/db of a Redis URL: never the password, safe for logs and pages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def glob_escape(text: str) -> str:
    """Escape Redis MATCH pattern characters so that a prefix is matched literally."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def keys_unlink(*, client: redis.Redis, pattern: str, batch_size: int = CLEAR_BATCH_SIZE) -> int:
    """Delete the keys matching `pattern` with SCAN + UNLINK in batches; never FLUSHDB/FLUSHALL.

    SCAN does not block the server the way KEYS does, and UNLINK frees memory in Redis' background
    thread. Returns the number of keys removed.
    """
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=batch_size):
        batch.append(key)
        if len(batch) >= batch_size:
            removed += client.unlink(*batch)
            batch.clear()
    if batch:
        removed += client.unlink(*batch)
    return removed


_MISSING = object()


def _guarded(name: str, *, fallback: Any, write: bool):
    """Wrap RedisCache.<name>: skip while the breaker is open, answer `fallback` on an outage."""
    method = getattr(RedisCache, name)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return self.call_strict(method, *args, write=write, **kwargs)
        except CacheUnavailable:
            return fallback(*args, **kwargs) if callable(fallback) else fallback

    return wrapper


def _get_default(key, default=None, *args, **kwargs):
    return default


class ResilientRedisCache(RedisCache):
    """django-redis' RedisCache whose calls go through a per-process circuit breaker.

    OPTIONS (besides django-redis' own): CIRCUIT_BREAKER_SECONDS (how long to skip Redis after a
    failure, default 5), ERROR_LOG_INTERVAL (seconds between two logged failures, default 60).
    IGNORE_EXCEPTIONS is forced off: this class decides what an outage returns.
    """

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS", {}))
        reset_seconds = float(options.pop("CIRCUIT_BREAKER_SECONDS", 5.0))
        log_interval = float(options.pop("ERROR_LOG_INTERVAL", 60.0))
        options["IGNORE_EXCEPTIONS"] = False
        super().__init__(server, {**params, "OPTIONS": options})
        self.location = redacted_location(server.split(",")[0] if isinstance(server, str) else server[0])
        self.breaker: CircuitBreaker = breaker_for(
            name=f"Redis {self.location} (prefix {self.key_prefix!r})",
            reset_seconds=reset_seconds,
            log_interval_seconds=log_interval,
        )
        if self.breaker.on_recovery is None:
            self.breaker.on_recovery = self._clear_in_background

    @property
    def available(self) -> bool:
        """False while the breaker is open, i.e. Redis failed less than CIRCUIT_BREAKER_SECONDS ago."""
        return self.breaker.allow()

    def call_strict(self, method, *args, write: bool = False, **kwargs):
        """Run RedisCache.<method> through the breaker; raise CacheUnavailable on an outage."""
        if not self.breaker.allow():
            if write:
                self.breaker.record_dropped_write()
            raise CacheUnavailable(self.location)
        try:
            result = method(self, *args, **kwargs)
        except ConnectionInterrupted as error:
            cause = error.__cause__ or error
            if not isinstance(cause, OUTAGE_ERRORS):
                raise cause from None
            self._record_failure(cause, write=write)
            raise CacheUnavailable(self.location) from None
        except OUTAGE_ERRORS as error:
            self._record_failure(error, write=write)
            raise CacheUnavailable(self.location) from None
        self.breaker.record_success()
        return result

    def strict(self, name: str, *args, write: bool, **kwargs):
        """RedisCache.<name>(...) through the breaker; raises CacheUnavailable instead of missing."""
        return self.call_strict(getattr(RedisCache, name), *args, write=write, **kwargs)

    def _record_failure(self, error: BaseException, *, write: bool) -> None:
        self.breaker.record_failure(error)
        if write:
            self.breaker.record_dropped_write()

    def redis_client(self, *, write: bool = True) -> redis.Redis:
        """The underlying redis-py client (for SCAN, INFO...); callers handle OUTAGE_ERRORS."""
        return self.client.get_client(write=write)

    def prefix_pattern(self) -> str:
        """MATCH pattern of every key this cache wrote (any version), the prefix taken literally."""
        if not self.key_prefix:
            # Without a prefix "the app's keys" would be every key of the database.
            raise ImproperlyConfigured("The Redis cache needs a KEY_PREFIX (CACHE_KEY_PREFIX).")
        return f"{glob_escape(self.key_prefix)}:*"

    def clear_prefix(self) -> int:
        """Delete this cache's keys only (SCAN + UNLINK); raises CacheUnavailable on an outage."""
        return self.call_strict(
            lambda cache: keys_unlink(client=cache.redis_client(), pattern=cache.prefix_pattern()), write=True
        )

    def _clear_in_background(self) -> None:
        def run() -> None:
            try:
                removed = self.clear_prefix()
            except CacheUnavailable:
                return
            logger.warning("cleared %d cache keys that may have missed an invalidation during the outage", removed)

        threading.Thread(target=run, name="opsdesk-cache-recovery-clear", daemon=True).start()

    def clear(self) -> bool:
        """Delete this application's keys only: FLUSHDB would also wipe other applications' keys."""
        try:
            self.clear_prefix()
        except CacheUnavailable:
            return False
        return True

    get = _guarded("get", fallback=_get_default, write=False)
    get_many = _guarded("get_many", fallback=lambda *args, **kwargs: {}, write=False)
    has_key = _guarded("has_key", fallback=False, write=False)
    ttl = _guarded("ttl", fallback=None, write=False)
    keys = _guarded("keys", fallback=lambda *args, **kwargs: [], write=False)
    set = _guarded("set", fallback=False, write=True)
    add = _guarded("add", fallback=False, write=True)
    delete = _guarded("delete", fallback=False, write=True)
    set_many = _guarded("set_many", fallback=lambda data, *args, **kwargs: list(data), write=True)
    delete_many = _guarded("delete_many", fallback=None, write=True)
    delete_pattern = _guarded("delete_pattern", fallback=0, write=True)
    touch = _guarded("touch", fallback=False, write=True)
    expire = _guarded("expire", fallback=False, write=True)
    persist = _guarded("persist", fallback=False, write=True)

    def incr(self, key, delta=1, version=None, **kwargs):
        """Like Django's: ValueError when the key is missing, which is how an outage looks too."""
        try:
            return self.call_strict(RedisCache.incr, key, delta, version=version, write=True, **kwargs)
        except CacheUnavailable:
            raise ValueError(f"Key {key!r} not found (cache unavailable)") from None

    def decr(self, key, delta=1, version=None, **kwargs):
        return self.incr(key, -delta, version=version, **kwargs)



class LargeValueZlibCompressor(ZlibCompressor):
    """zlib for values over 1 KiB only: small values (counters, flags) are not worth the CPU.

    Smaller values are stored as they are; django-redis reads both (a value that does not
    decompress is returned unchanged).
    """

    min_length = 1024
