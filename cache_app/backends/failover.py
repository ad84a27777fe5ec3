"""A cache that uses a primary alias while it answers and a per-process memory cache otherwise."""
from __future__ import annotations

from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.locmem import LocMemCache

from cache_app.exceptions import CacheUnavailable

REDIS = "redis"
PER_PROCESS = "per-process"


class FailoverCache(BaseCache):
    """Delegates to the cache alias in OPTIONS["PRIMARY"]; while it is unavailable, to local memory.

    Built for the rate limiter: counting must go on during a Redis outage (per process, which is
    weaker but still a limit) instead of either letting everything through or refusing everything.
    The primary must offer `call_strict()` (ResilientRedisCache) so that an outage is told apart
    from a cache miss. Keys are passed unchanged: the primary applies its own KEY_PREFIX.
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = params.get("OPTIONS", {})
        self.primary_alias = options.get("PRIMARY", "default")
        self.fallback = LocMemCache(
            f"opsdesk-failover-{location or self.primary_alias}",
            {"TIMEOUT": params.get("TIMEOUT", 300), "OPTIONS": {"MAX_ENTRIES": options.get("FALLBACK_MAX_ENTRIES", 10000)}},
        )

    @property
    def primary(self) -> BaseCache:
        return caches[self.primary_alias]

    @property
    def active_backend(self) -> str:
        """"redis" while the primary answers, "per-process" while the fallback is used."""
        available = getattr(self.primary, "available", False)
        return REDIS if available else PER_PROCESS

    def _call(self, name: str, *args, write: bool = True, **kwargs):
        primary = self.primary
        if getattr(primary, "available", False):
            try:
                return primary.strict(name, *args, write=write, **kwargs)
            except CacheUnavailable:
                pass
        return getattr(self.fallback, name)(*args, **kwargs)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._call("add", key, value, timeout=timeout, version=version)

    def get(self, key, default=None, version=None):
        return self._call("get", key, default=default, version=version, write=False)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._call("set", key, value, timeout=timeout, version=version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._call("touch", key, timeout=timeout, version=version)

    def delete(self, key, version=None):
        return self._call("delete", key, version=version)

    def incr(self, key, delta=1, version=None):
        return self._call("incr", key, delta, version=version)

    def has_key(self, key, version=None):
        return self._call("has_key", key, version=version, write=False)

    def clear(self):
        self.fallback.clear()
        return self.primary.clear()
