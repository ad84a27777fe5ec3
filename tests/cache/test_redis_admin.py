"""The admin's Redis page and "clear application cache": permissions, Redis up, down, absent."""
import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache

from backups_app.models import AuditEntry
from tests.cache.conftest import use_redis

STATS = "/admin/cache_app/redisserver/"
CLEAR = "/admin/cache_app/redisserver/clear/"


def make_staff(client, *codenames, superuser=False):
    user_model = get_user_model()
    if superuser:
        user = user_model.objects.create_superuser("root", password="x")
    else:
        user = user_model.objects.create_user("staff", password="x", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(content_type__app_label="cache_app", codename__in=codenames))
    client.force_login(user)
    return user


@pytest.mark.django_db
def test_staff_without_the_permission_gets_403_and_no_link(client):
    make_staff(client)
    assert client.get(STATS).status_code == 403
    assert client.get(CLEAR).status_code == 403
    assert client.post(CLEAR).status_code == 403
    assert STATS.encode() not in client.get("/admin/").content


@pytest.mark.django_db
def test_without_redis_the_page_says_so(client):
    make_staff(client, "view_redis")
    index = client.get("/admin/")
    assert STATS.encode() in index.content
    response = client.get(STATS)
    assert response.status_code == 200
    assert b"Redis is not configured" in response.content
    assert CLEAR.encode() not in response.content


@pytest.mark.django_db
@pytest.mark.services
def test_statistics_from_the_machine_redis(client, machine_redis):
    make_staff(client, "view_redis")
    cache.set("figure", 1)
    cache.get("figure")
    response = client.get(STATS)
    assert response.status_code == 200
    stats = response.context["stats"]
    assert stats.version and stats.uptime_seconds > 0 and stats.connected_clients >= 1
    # The figure and the session force_login stored.
    assert stats.app_keys == 2 and stats.app_sessions == 1 and stats.key_prefix == machine_redis
    assert "db0" in stats.keys_per_database
    for label in [b"Redis version", b"Memory peak", b"Hit rate", b"Evicted keys", b"Operations per second"]:
        assert label in response.content
    assert CLEAR.encode() not in response.content  # no clear_cache permission


@pytest.mark.django_db
@pytest.mark.services
def test_sessions_are_counted(client, machine_redis):
    make_staff(client, "view_redis")  # force_login stores a cached_db session
    assert client.get(STATS).context["stats"].app_sessions == 1


@pytest.mark.django_db
@pytest.mark.services
def test_clear_needs_confirmation_deletes_only_the_prefix_and_is_audited(client, machine_redis, redis_url):
    user = make_staff(client, "view_redis", "clear_cache")
    raw = redis.Redis.from_url(redis_url)
    neighbour = f"{machine_redis}x:1:other-app"
    raw.set(neighbour, "keep", ex=60)
    try:
        cache.set_many({f"figure-{number}": number for number in range(1500)})
        confirmation = client.get(CLEAR)
        assert confirmation.status_code == 200 and b"Yes, clear the application cache" in confirmation.content
        assert cache.get("figure-1") == 1  # GET changes nothing
        response = client.post(CLEAR, follow=True)
        assert response.status_code == 200
        assert b"keys removed" in response.content
        assert cache.get("figure-1") is None
        assert raw.get(neighbour) == b"keep"
        entry = AuditEntry.objects.get(action="cache_clear")
        assert entry.user == user and entry.outcome == "success" and entry.target == machine_redis
        assert int(entry.detail.split()[0]) >= 1500
        # Still logged in: the session came back from the database.
        assert client.get(STATS).status_code == 200
    finally:
        raw.delete(neighbour)


@pytest.mark.django_db
def test_clear_without_csrf_token_is_refused(machine_redis):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    make_staff(client, "view_redis", "clear_cache")
    assert client.post(CLEAR).status_code == 403


@pytest.mark.django_db
@pytest.mark.services
def test_redis_down_page_is_200_and_clear_fails_cleanly(client, settings, own_redis, unique_prefix):
    use_redis(settings, own_redis.url, unique_prefix)
    make_staff(client, superuser=True)
    own_redis.stop()
    response = client.get(STATS)
    assert response.status_code == 200 and b"does not answer" in response.content
    response = client.post(CLEAR, follow=True)
    assert response.status_code == 200 and b"nothing was cleared" in response.content
    assert AuditEntry.objects.get(action="cache_clear").outcome == "failure"
