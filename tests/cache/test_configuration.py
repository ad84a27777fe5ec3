"""REDIS_URL forms: plain, TLS, unix socket, Sentinel; and their Celery broker equivalents."""
import pytest
from django.core.exceptions import ImproperlyConfigured

from cache_app.backends.redis import glob_escape, redacted_location
from cache_app.configuration import redis_broker_location, redis_cache_location


@pytest.mark.parametrize("url", [
    "redis://:secret@cache.internal:6379/0", "rediss://:secret@cache.internal:6380/1?ssl_cert_reqs=required",
    "unix:///run/redis/redis.sock?db=2",
])
def test_plain_urls_pass_through(url):
    assert redis_cache_location(url) == (url, {})
    assert redis_broker_location(url) == (url, {})


def test_sentinel_url_becomes_django_redis_sentinel_options():
    location, options = redis_cache_location("sentinel://:p%40ss@s1:26379,s2/mymaster/3?sentinel_password=sp")
    assert location == "redis://:p%40ss@mymaster/3"
    assert options["SENTINELS"] == [("s1", 26379), ("s2", 26379)]
    assert options["CLIENT_CLASS"] == "django_redis.client.SentinelClient"
    assert options["CONNECTION_FACTORY"] == "django_redis.pool.SentinelConnectionFactory"
    assert options["SENTINEL_KWARGS"] == {"password": "sp"}


def test_sentinel_url_becomes_kombu_sentinel_broker():
    broker, transport = redis_broker_location("sentinel://:pw@s1:26379,s2:26380/mymaster/1")
    assert broker == "sentinel://:pw@s1:26379/1;sentinel://:pw@s2:26380/1"
    assert transport == {"master_name": "mymaster"}


@pytest.mark.parametrize("url", ["http://x", "sentinel://s1:26379", "sentinel://s1/mymaster/notanumber", "localhost:6379"])
def test_unusable_urls_are_refused(url):
    with pytest.raises(ImproperlyConfigured):
        redis_cache_location(url)


def test_locations_shown_never_carry_the_password():
    assert redacted_location("redis://user:secret@cache.internal:6379/0") == "redis://cache.internal:6379/0"


def test_prefix_is_matched_literally():
    assert glob_escape("app*[1]?") == "app\\*\\[1\\]\\?"
