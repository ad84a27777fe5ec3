"""/health: what anonymous callers see, who sees the details, and one bounded broker connection.

Issue 10 item 16 (docs/SECURITY.md): database aliases, backup times and free disk bytes are for
staff only; a load balancer needs the booleans. The broker check reuses one connection, and a
broker that accepts connections but never answers cannot hold /health past its deadline.
"""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from backups_app import liveness
from backups_app.models import AuditEntry, BackupRecord, ProcessHeartbeat, Trigger
from backups_app.services.tokens import api_token_create
from tests.conftest import REDIS_HOST, REDIS_PORT, require_service

pytestmark = pytest.mark.django_db(transaction=True)

BOOLEANS = {"status", "database", "redis", "storage", "broker", "worker", "scheduler", "databases",
            "binlog_archiver"}


@pytest.fixture(autouse=True)
def fresh_broker_connection():
    """Each test starts with no kept connection and no check still waiting on a broker.

    A check against a black-holed broker gives up on its deadline but its thread may still hold the
    connection lock for a while; the next test's first /health would then report the broker busy.
    """
    if liveness._broker_lock.acquire(timeout=30):
        liveness._broker_lock.release()
    liveness.broker_connection_reset()
    yield
    liveness.broker_connection_reset()


def staff_user(django_user_model, *, staff: bool = True):
    return django_user_model.objects.create_user(username=f"u{staff}", password="unused-password-1234", is_staff=staff)


def test_anonymous_callers_get_the_booleans_only(client):
    body = client.get("/health").json()
    assert set(body) == BOOLEANS
    assert all(isinstance(value, bool) for key, value in body.items() if key != "status")
    assert "free_bytes" not in str(body) and "backups" not in str(body)


def test_a_non_staff_session_gets_the_booleans_only(client, django_user_model):
    client.force_login(staff_user(django_user_model, staff=False))
    assert "details" not in client.get("/health").json()


def test_a_staff_session_gets_the_details(client, django_user_model):
    client.force_login(staff_user(django_user_model))
    details = client.get("/health").json()["details"]
    assert "storage" in details and "backups" in details["database"]


def test_a_staff_api_token_gets_the_details_and_a_bad_one_does_not(django_user_model):
    raw = api_token_create(user=staff_user(django_user_model), source=AuditEntry.Source.CLI).raw_token
    assert "details" in Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get("/health").json()
    response = Client(HTTP_AUTHORIZATION=f"Bearer {raw}x").get("/health")
    assert response.status_code == 200 and "details" not in response.json()


def test_the_health_token_gets_the_details(settings):
    settings.HEALTH_TOKEN = "monitoring-token-for-tests-0123456789"
    assert "details" in Client(HTTP_AUTHORIZATION=f"Bearer {settings.HEALTH_TOKEN}").get("/health").json()
    assert "details" not in Client(HTTP_AUTHORIZATION="Bearer monitoring-token").get("/health").json()
    settings.HEALTH_TOKEN = ""
    assert "details" not in Client(HTTP_AUTHORIZATION="Bearer ").get("/health").json()


def test_worker_and_scheduler_booleans(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing there: broker false
    body = client.get("/health").json()
    assert body["worker"] is False and body["scheduler"] is False
    now = timezone.now()
    for component, queues in (("worker", settings.CELERY_TASK_DEFAULT_QUEUE), ("scheduler", "")):
        ProcessHeartbeat.objects.create(component=component, host="h", pid=1, queues=queues, started_at=now, seen_at=now)
    body = client.get("/health").json()
    assert body["worker"] is True and body["scheduler"] is True


def test_jobs_waiting_with_no_worker_make_health_503(client, settings, db):
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    settings.CELERY_BROKER_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    settings.CELERY_TASK_DEFAULT_QUEUE = "opsdesk-health-test-never-consumed"
    first = client.get("/health")
    assert first.status_code == 200, first.json()  # no worker, but nothing waits
    BackupRecord.objects.create(
        name="backup_waiting.sql.gz", database="default", engine="sqlite", trigger=Trigger.API,
        status=BackupRecord.Status.QUEUED, compression="gzip", created_at=timezone.now() - timedelta(minutes=5),
    )
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["worker"] is False
    assert response.json()["broker"] is True


def free_port() -> int:
    from tests.cache.conftest import free_port as port

    return port()


@pytest.mark.services
def test_the_broker_connection_is_kept_between_calls(client, settings):
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    settings.CELERY_BROKER_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    assert client.get("/health").json()["broker"] is True
    first = liveness._broker_connection
    first_client = first.default_channel.client
    assert client.get("/health").json()["broker"] is True
    assert liveness._broker_connection is first and first.default_channel.client is first_client


@pytest.mark.services
def test_a_broken_broker_connection_is_replaced(client, settings, own_redis):
    settings.CELERY_BROKER_URL = own_redis.url
    assert client.get("/health").json()["broker"] is True
    own_redis.stop()
    assert client.get("/health").json()["broker"] is False
    own_redis.start()
    assert client.get("/health").json()["broker"] is True


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_black_holed_broker_is_false_and_bounded_by_the_timeout(client, settings, black_hole, scheme):
    """A listening socket that never answers, as the broker: the check reports false and returns."""
    settings.CELERY_BROKER_URL = f"{scheme}://127.0.0.1:{black_hole}/0" if scheme == "redis" else f"amqp://guest:guest@127.0.0.1:{black_hole}//"
    settings.HEALTH_CHECK_TIMEOUT = 0.5
    started = time.monotonic()
    response = client.get("/health")
    elapsed = time.monotonic() - started
    print(f"/health with a black-holed {scheme} broker answered in {elapsed:.2f} s")  # measured, not asserted
    assert response.status_code == 503 and response.json()["broker"] is False
    # Bounded by configuration, not by luck: every wait on the broker uses the health deadline.
    connection = liveness._broker_connection_new(settings.HEALTH_CHECK_TIMEOUT)
    assert connection.connect_timeout == 0.5
    for option in ("socket_timeout", "socket_connect_timeout", "read_timeout", "write_timeout"):
        assert connection.transport_options[option] == 0.5
    # A second call does not stack up behind the first one's hung connection attempt.
    assert client.get("/health").json()["broker"] is False
