"""Exceptions of cache_app."""


class CacheError(Exception):
    """Base class of cache_app's errors."""


class CacheUnavailable(CacheError):
    """Redis did not answer (down, unreachable, timed out) or its circuit breaker is open."""


class RedisNotConfigured(CacheError):
    """The operation needs Redis but REDIS_URL is not set."""
