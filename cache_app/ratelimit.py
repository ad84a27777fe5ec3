"""Fixed-window rate limiting for callers that are not a login form (the REST API's per-token limit).

Counting is django-ratelimit's `get_usage` (cache ADD + INCR, a window per key with a stable jitter)
on the cache alias RATELIMIT_USE_CACHE ("ratelimit"). With REDIS_URL that alias is a FailoverCache
over the Redis cache: counters are shared by every process and machine and survive restarts; during
a Redis outage each process counts on its own until Redis answers again. Without REDIS_URL the
counters are per process (and /health's details say so).
"""
from __future__ import annotations

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from django_ratelimit import ALL
from django_ratelimit.core import get_usage

from cache_app.backends.failover import PER_PROCESS, REDIS


def _rate_limit_request() -> HttpRequest:
    # get_usage() wants a request only to read its method and to hand it to the key function; the
    # caller already resolved the key, so an empty request is enough.
    return HttpRequest()


def rate_limit_check(*, scope: str, key: str, limit: int, period_seconds: int) -> int | None:
    """Count one hit of `key` in `scope`; return Retry-After seconds when over `limit`, else None.

    `limit` hits are allowed per `period_seconds` window (the limit+1-th is refused). `scope`
    separates independent limits ("api", "api-write"...); `key` identifies the caller (a token's id,
    never the token itself). Raises ValueError for a non-positive limit or period.
    """
    if limit < 1 or period_seconds < 1:
        raise ValueError("limit and period_seconds must be positive")
    if not scope or not key:
        raise ValueError("scope and key must not be empty")
    usage = get_usage(
        _rate_limit_request(),
        group=f"opsdesk.{scope}",
        key=lambda group, request: key,
        rate=(limit, period_seconds),
        method=ALL,
        increment=True,
    )
    if usage is None or not usage["should_limit"]:
        return None
    # time_left is -1 when the cache failed in a way the FailoverCache could not absorb; refusing
    # for a whole period is then the safe answer.
    time_left = usage["time_left"]
    return max(1, time_left if time_left >= 0 else period_seconds)


def rate_limit_backend() -> str:
    """Where counters live right now: "redis" (shared, persistent) or "per-process"."""
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        return "disabled"
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    active = getattr(cache, "active_backend", None)
    if active is not None:
        return active
    return REDIS if getattr(cache, "available", None) is not None else PER_PROCESS
