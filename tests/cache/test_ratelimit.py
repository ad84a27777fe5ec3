"""cache_app.ratelimit.rate_limit_check: per process without Redis, shared through Redis with it."""
import subprocess
import sys
import time
import uuid

import pytest
import redis
from django.core.cache import caches

from cache_app.ratelimit import rate_limit_backend, rate_limit_check
from tests.cache.conftest import use_redis


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def hit(times: int, **kwargs) -> list:
    return [rate_limit_check(**kwargs) for _ in range(times)]


def test_allows_the_limit_then_answers_retry_after():
    kwargs = {"scope": unique("api"), "key": "token-1", "limit": 3, "period_seconds": 60}
    results = hit(5, **kwargs)
    assert results[:3] == [None, None, None]
    assert all(isinstance(value, int) and 1 <= value <= 60 for value in results[3:])


def test_keys_and_scopes_are_independent():
    scope = unique("api")
    assert hit(2, scope=scope, key="a", limit=1, period_seconds=60)[1] is not None
    assert rate_limit_check(scope=scope, key="b", limit=1, period_seconds=60) is None
    assert rate_limit_check(scope=unique("other"), key="a", limit=1, period_seconds=60) is None


def test_window_expires():
    kwargs = {"scope": unique("api"), "key": "k", "limit": 1, "period_seconds": 1}
    rate_limit_check(**kwargs)
    assert rate_limit_check(**kwargs) is not None
    time.sleep(1.1)
    assert rate_limit_check(**kwargs) is None


@pytest.mark.parametrize("arguments", [
    {"limit": 0, "period_seconds": 60}, {"limit": 5, "period_seconds": 0}, {"limit": -1, "period_seconds": 5},
])
def test_rejects_nonsense_limits(arguments):
    with pytest.raises(ValueError):
        rate_limit_check(scope="api", key="k", **arguments)


def test_without_redis_the_backend_is_per_process():
    assert rate_limit_backend() == "per-process"


def test_disabled_rate_limiting_lets_everything_through(settings):
    settings.RATELIMIT_ENABLE = False
    assert hit(3, scope=unique("api"), key="k", limit=1, period_seconds=60) == [None, None, None]
    assert rate_limit_backend() == "disabled"


@pytest.mark.services
def test_redis_counters_are_shared_and_survive_a_new_client(machine_redis, redis_url):
    kwargs = {"scope": unique("api"), "key": "token-7", "limit": 2, "period_seconds": 60}
    assert hit(2, **kwargs) == [None, None]
    assert rate_limit_backend() == "redis"
    raw = redis.Redis.from_url(redis_url)
    assert list(raw.scan_iter(match=f"{machine_redis}:*ratelimit:*"))
    # A restart: new cache objects, new connections, same Redis.
    caches.close_all()
    del caches["default"], caches["ratelimit"]
    assert rate_limit_check(**kwargs) is not None


@pytest.mark.services
def test_redis_counters_are_shared_with_another_process(machine_redis, redis_url, settings):
    scope = unique("api")
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='tests.settings'; django.setup();"
        "from django.conf import settings; from tests.cache.conftest import redis_caches;"
        f"settings.CACHES = redis_caches({redis_url!r}, {machine_redis!r}); settings.RATELIMIT_USE_CACHE='ratelimit';"
        "from cache_app.ratelimit import rate_limit_check;"
        f"print([rate_limit_check(scope={scope!r}, key='t', limit=3, period_seconds=3600) for _ in range(3)])"
    )
    # An hour-long window: a 60 s one could roll over between the two processes and reset the count.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[None, None, None]", result.stderr
    assert rate_limit_check(scope=scope, key="t", limit=3, period_seconds=3600) is not None


@pytest.mark.services
def test_redis_down_falls_back_to_per_process_counting(settings, own_redis, unique_prefix):
    use_redis(settings, own_redis.url, unique_prefix, breaker_seconds=30)
    kwargs = {"scope": unique("api"), "key": "k", "limit": 2, "period_seconds": 60}
    assert rate_limit_check(**kwargs) is None
    own_redis.stop()
    started = time.monotonic()
    results = hit(4, **kwargs)
    assert time.monotonic() - started < 2
    assert results[:2] == [None, None] and results[2] is not None and results[3] is not None
    assert rate_limit_backend() == "per-process"
