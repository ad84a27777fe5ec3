"""Admin login brute force: 5 failures per username + IP -> 429 with Retry-After, kept across restarts."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.test import Client

from tests.cache.conftest import use_redis

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("ops", password="right-password-123", is_staff=True)


def attempt(client: Client, password: str, username: str = "ops"):
    return client.post(LOGIN, {"username": username, "password": password})


def test_five_failures_lock_the_username_and_address_pair(staff):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(4):
        assert attempt(client, "wrong").status_code == 200
    locked = attempt(client, "wrong")
    assert locked.status_code == 429
    assert 890 <= int(locked["Retry-After"]) <= 900
    assert b"Too many failed logins" in locked.content
    # Even the right password is refused while locked.
    assert attempt(client, "right-password-123").status_code == 429


def test_other_addresses_and_other_users_are_not_locked(staff):
    attacker = Client(REMOTE_ADDR="203.0.113.8")
    for _ in range(5):
        attempt(attacker, "wrong")
    assert attempt(attacker, "wrong").status_code == 429
    assert attempt(Client(REMOTE_ADDR="198.51.100.1"), "right-password-123").status_code == 302
    assert attempt(attacker, "whatever", username="someone-else").status_code == 200


def test_success_resets_the_count(staff):
    client = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(4):
        attempt(client, "wrong")
    assert attempt(client, "right-password-123").status_code == 302
    client.logout()
    for _ in range(4):
        assert attempt(client, "wrong").status_code == 200


def test_forwarded_for_header_cannot_dodge_the_lockout(staff):
    client = Client(REMOTE_ADDR="203.0.113.10")
    for number in range(5):
        client.post(LOGIN, {"username": "ops", "password": "wrong"}, HTTP_X_FORWARDED_FOR=f"10.0.0.{number}")
    assert attempt(client, "wrong").status_code == 429


def test_login_without_a_request_is_not_checked(staff):
    # Django's test client and management commands authenticate without a request.
    assert Client().login(username="ops", password="right-password-123")


@pytest.mark.services
def test_lockout_survives_a_new_cache_client_and_a_redis_outage(staff, settings, own_redis, unique_prefix):
    use_redis(settings, own_redis.url, unique_prefix)
    client = Client(REMOTE_ADDR="203.0.113.11")
    for _ in range(5):
        attempt(client, "wrong")
    # "Restart": new cache objects and connections, axes' handler rebuilt, then Redis gone too.
    caches.close_all()
    AxesProxyHandler.implementation = None
    own_redis.stop()
    assert attempt(Client(REMOTE_ADDR="203.0.113.11"), "right-password-123").status_code == 429


RESTART_SCRIPT = textwrap.dedent("""
    import sys, django
    django.setup()
    from django.test.utils import setup_test_environment
    setup_test_environment()
    from django.test import Client
    from django.contrib.auth import get_user_model
    if sys.argv[1] == "fail":
        get_user_model().objects.create_user("ops", password="right-password-123", is_staff=True)
        client = Client(REMOTE_ADDR="203.0.113.12")
        codes = [client.post("/admin/login/", {"username": "ops", "password": "wrong"}).status_code for _ in range(5)]
    else:
        client = Client(REMOTE_ADDR="203.0.113.12")
        codes = [client.post("/admin/login/", {"username": "ops", "password": "right-password-123"}).status_code]
    print(codes)
""")


@pytest.mark.slow
def test_lockout_survives_a_process_restart(tmp_path):
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_URL", "REDIS_URL"))}
    environment.update(
        DJANGO_SETTINGS_MODULE="ops_project.settings", DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}",
        CELERY_BROKER_URL="", REDIS_URL="",
    )

    def run(*args):
        return subprocess.run(
            [sys.executable, *args], cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=120,
        )

    assert run("manage.py", "migrate", "--noinput", "-v", "0").returncode == 0
    first = run("-c", RESTART_SCRIPT, "fail")
    assert first.stdout.strip() == "[200, 200, 200, 200, 429]", first.stderr[-2000:]
    second = run("-c", RESTART_SCRIPT, "login")
    assert second.stdout.strip() == "[429]", second.stderr[-2000:]
