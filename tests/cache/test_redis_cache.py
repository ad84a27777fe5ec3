"""The default cache on Redis: prefix, compression, clear by prefix, and Redis down.

docs/FAULTS.md: redis-down, redis-down-sessions, lock-while-redis-down.
"""
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.contrib.auth import get_user_model
from django.core.cache import cache, caches
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from tests.cache.conftest import free_port, use_redis

PROJECT_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.services


def test_values_live_under_the_prefix_and_large_ones_are_compressed(machine_redis, redis_url):
    cache.set("small", "x")
    cache.set("large", "y" * 10_000)
    assert cache.get("small") == "x" and cache.get("large") == "y" * 10_000
    raw = redis.Redis.from_url(redis_url)
    keys = {key.decode() for key in raw.scan_iter(match=f"{machine_redis}:*")}
    assert keys == {f"{machine_redis}:1:small", f"{machine_redis}:1:large"}
    assert len(raw.get(f"{machine_redis}:1:large")) < 1000  # zlib, not 10 kB
    assert not raw.get(f"{machine_redis}:1:small").startswith(b"x\x9c")


def test_clear_removes_only_the_apps_keys(machine_redis, redis_url):
    raw = redis.Redis.from_url(redis_url)
    neighbour = f"{machine_redis}-neighbour:1:keep"
    raw.set(neighbour, "other application", ex=60)
    try:
        cache.set_many({f"key-{number}": number for number in range(1200)})
        assert cache.clear() is True
        assert cache.get("key-5") is None
        assert list(raw.scan_iter(match=f"{machine_redis}:*")) == []
        assert raw.get(neighbour) == b"other application"
    finally:
        raw.delete(neighbour)


def test_add_is_a_real_lock_while_redis_answers(machine_redis):
    assert cache.add("lock", "me", 30) is True
    assert cache.add("lock", "someone else", 30) is False


def test_redis_down_reads_miss_writes_drop_quickly_and_logs_once(settings, own_redis, unique_prefix, caplog):
    use_redis(settings, own_redis.url, unique_prefix, breaker_seconds=30)
    cache.set("k", "v")
    own_redis.stop()
    caplog.set_level(logging.WARNING, logger="cache_app.redis")
    started = time.monotonic()
    for _ in range(200):
        assert cache.get("k", "default") == "default"
        assert cache.set("k", "v2") is False
        assert cache.get_many(["a", "b"]) == {}
        # docs/FAULTS.md lock-while-redis-down: a lock through cache.add() is never believed taken
        # while Redis is down.
        assert cache.add("lock", "me") is False
        with pytest.raises(ValueError):
            cache.incr("counter")
        assert cache.get_or_set("figures", lambda: 42) == 42
    assert time.monotonic() - started < 1.0
    assert len([record for record in caplog.records if "unavailable" in record.getMessage()]) == 1


def test_recovers_by_itself_after_the_breaker_interval(settings, own_redis, unique_prefix):
    use_redis(settings, own_redis.url, unique_prefix, breaker_seconds=0.3)
    own_redis.stop()
    assert cache.set("k", "v") is False
    own_redis.start()
    assert cache.set("k", "v") is False  # still within the breaker interval: skipped
    time.sleep(0.4)
    assert cache.set("k", "v") is True
    # The first success also starts the background clear of keys that missed an invalidation
    # (writes were dropped above); once it is done, values stay.
    time.sleep(0.5)
    assert cache.set("k", "v") is True and cache.get("k") == "v"


def test_writes_dropped_during_an_outage_clear_the_app_keys_on_recovery(machine_redis, settings):
    settings.CACHES["default"]["OPTIONS"]["CIRCUIT_BREAKER_SECONDS"] = 0.3
    settings.CACHES = settings.CACHES
    cache.set("last_backup", "old")
    caches["default"].breaker.record_failure(ConnectionError("simulated outage"))
    assert cache.delete("last_backup") is False  # this invalidation never reached Redis
    time.sleep(0.4)
    deadline = time.monotonic() + 5
    cache.get("probe")  # first success after the outage
    while cache.get("last_backup") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cache.get("last_backup") is None


def test_pages_and_sessions_survive_redis_going_down(settings, own_redis, unique_prefix, db):
    use_redis(settings, own_redis.url, unique_prefix)
    get_user_model().objects.create_superuser("ops", password="right-password-123")
    client = Client()
    assert client.post("/admin/login/?next=/admin/", {"username": "ops", "password": "right-password-123"}).status_code == 302
    assert client.get("/admin/").status_code == 200
    own_redis.stop()
    for path in ["/admin/", "/admin/auth/user/", "/admin/login/"]:
        started = time.monotonic()
        response = client.get(path)
        assert response.status_code in (200, 302) and time.monotonic() - started < 1.5, path
    # docs/FAULTS.md redis-down-sessions: nobody is logged out (cached_db reads the session from
    # the database).
    assert client.get("/admin/").status_code == 200
    # And a new login during the outage does not hang.
    other = Client()
    started = time.monotonic()
    assert other.post("/admin/login/?next=/admin/", {"username": "ops", "password": "right-password-123"}).status_code == 302
    assert time.monotonic() - started < 1.5
    assert other.get("/admin/").status_code == 200


def test_the_project_starts_while_redis_is_down(tmp_path):
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DATABASE_URL")}
    environment.update(
        DJANGO_SETTINGS_MODULE="ops_project.settings", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}", CELERY_BROKER_URL="",
    )
    code = (
        "import django; django.setup(); from django.core.cache import cache;"
        "print(cache.get('x', 'miss'), cache.set('x', 1))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "miss False"


def test_a_hung_redis_costs_one_timeout_then_nothing(settings, hung_server, unique_prefix, db):
    port, connections_made = hung_server
    use_redis(settings, f"redis://127.0.0.1:{port}/0", unique_prefix, breaker_seconds=30)
    get_user_model().objects.create_superuser("ops", password="right-password-123")
    client = Client()
    client.force_login(get_user_model().objects.get())
    started = time.monotonic()
    assert client.get("/admin/").status_code == 200
    first = time.monotonic() - started
    assert first < 1.5  # bounded by the 0.3 s socket timeouts
    attempts_after_first_page = len(connections_made)
    for _ in range(10):
        assert client.get("/admin/").status_code == 200
    # The breaker skips Redis altogether: not one more connection attempt (each would cost a timeout).
    assert len(connections_made) == attempts_after_first_page


def test_an_empty_prefix_is_refused_rather_than_clearing_everything(settings, redis_url):
    use_redis(settings, redis_url, "")
    with pytest.raises(ImproperlyConfigured):
        caches["default"].clear_prefix()
