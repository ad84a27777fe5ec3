"""/health: JSON shape, required components, deadline, Redis outage and recovery (docs/FAULTS.md: redis-down)."""
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from backups_app.models import BackupRecord
from cache_app.health import HealthCheck
from cache_app.services import health_check_run
from tests.cache.conftest import free_port, use_redis

pytestmark = pytest.mark.django_db(transaction=True)


HEALTH_TOKEN = "health-test-token-not-a-secret"


@pytest.fixture
def client(settings):
    """These tests read the details, which only staff or a token get (see test_health_access.py).

    The HEALTH_TOKEN rather than a staff session: a session is read through the cache, and some of
    these tests hang the cache's Redis on purpose.
    """
    from django.test import Client

    settings.HEALTH_TOKEN = HEALTH_TOKEN
    return Client(HTTP_AUTHORIZATION=f"Bearer {HEALTH_TOKEN}")


def get_health(client, path="/health"):
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


@pytest.mark.parametrize("path", ["/health", "/health/"])
def test_embedded_defaults_are_healthy(client, path):
    response, _ = get_health(client, path)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] is True and body["storage"] is True
    # Not configured: reported false, not required.
    assert body["redis"] is False and body["details"]["redis"] == {
        "required": False, "configured": False, "cache": "per-process", "rate_limit": "per-process",
    }
    assert body["broker"] is False and body["details"]["broker"]["required"] is False
    assert "no-store" in response["Cache-Control"]
    assert body["details"]["database"]["latency_ms"] >= 0


def test_post_is_refused(client):
    assert client.post("/health").status_code == 405


def test_reports_the_age_of_the_last_good_backup(client):
    finished = timezone.now() - timedelta(hours=2)
    common = {"database": "default", "engine": "sqlite", "trigger": "cli", "compression": "gzip"}
    BackupRecord.objects.create(name="good", status="success", created_at=finished, finished_at=finished, **common)
    BackupRecord.objects.create(name="newer-failed", status="failed", created_at=timezone.now(), **common)
    backups = client.get("/health").json()["details"]["database"]["backups"]
    assert 7190 <= backups["default"]["age_seconds"] <= 7300
    assert backups["default"]["last_good_at"].startswith(finished.isoformat()[:16])


def test_unusable_backup_folder_fails_the_storage_check(client, settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    storages = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages["backups"]["OPTIONS"] = {**storages["backups"]["OPTIONS"], "location": blocker / "backups"}
    settings.STORAGES = storages
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["storage"] is False
    assert response.json()["details"]["storage"]["error"]


class SleepingCheck(HealthCheck):
    component = "sleeper"

    def check_status(self):
        time.sleep(5)
        return {}


def test_a_hanging_check_is_cut_at_the_deadline():
    started = time.monotonic()
    report = health_check_run(timeout_seconds=0.3, checks=[SleepingCheck()])
    assert time.monotonic() - started < 1
    assert report.as_dict()["sleeper"] is False
    assert report.as_dict()["details"]["sleeper"]["error"] == "timeout"
    assert not report.ok


@pytest.mark.services
def test_machine_redis_is_reported(client, machine_redis):
    body = client.get("/health").json()
    assert body["redis"] is True and body["status"] == "ok"
    assert body["details"]["redis"]["rate_limit"] == "redis"
    assert body["details"]["redis"]["required"] is True


@pytest.mark.services
def test_redis_down_gives_503_quickly_and_recovers_without_restart(client, settings, own_redis, unique_prefix):
    use_redis(settings, own_redis.url, unique_prefix)
    assert client.get("/health").status_code == 200
    own_redis.stop()
    for _ in range(3):
        response, elapsed = get_health(client)
        assert response.status_code == 503 and elapsed < 1
        body = response.json()
        assert body["redis"] is False and body["status"] == "fail" and body["database"] is True
        assert body["details"]["redis"]["rate_limit"] == "per-process"
        # Nothing about where Redis lives.
        assert str(own_redis.port) not in response.content.decode()
    own_redis.start()
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["redis"] is True


@pytest.mark.services
def test_hung_redis_still_answers_within_a_second(client, settings, black_hole, unique_prefix):
    use_redis(settings, f"redis://127.0.0.1:{black_hole}/0", unique_prefix)
    caches_config = settings.CACHES
    caches_config["default"]["OPTIONS"].update(SOCKET_TIMEOUT=10, SOCKET_CONNECT_TIMEOUT=10)
    settings.CACHES = caches_config
    response, elapsed = get_health(client)
    assert elapsed < 1.0
    assert response.status_code == 503
    assert response.json()["details"]["redis"]["error"] == "timeout"


@pytest.mark.services
def test_broker_is_required_when_configured(client, settings):
    from tests.conftest import require_service

    require_service("RabbitMQ", "127.0.0.1", 5672)
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
    response = client.get("/health")
    assert response.json()["broker"] is True and response.status_code == 200
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    response, elapsed = get_health(client)
    assert response.status_code == 503 and response.json()["broker"] is False and elapsed < 1
    assert "guest" not in response.content.decode()


class QueueReadingCheck(HealthCheck):
    """Like the worker check: is_required() reads opsdesk's database, here while it is down."""

    component = "queue_reader"

    def is_required(self):
        from django.db import OperationalError

        raise OperationalError("(2002, \"Can't connect to server on 'db.internal'\")")


class ArchiveListingCheck(HealthCheck):
    """Like the binlog check: is_configured() and failure_details() read the database."""

    component = "archive_lister"

    def is_required(self):
        return False

    def is_configured(self):
        from django.db import OperationalError

        raise OperationalError("(2002, \"Can't connect to server on 'db.internal'\")")

    def failure_details(self):
        raise AssertionError("the database is still down")


def test_checks_that_fail_outside_check_status_are_failures_not_a_500():
    report = health_check_run(timeout_seconds=2, checks=[QueueReadingCheck(), ArchiveListingCheck()])
    body = report.as_dict()
    assert body["status"] == "fail" and body["queue_reader"] is False and body["archive_lister"] is False
    details = body["details"]
    # Cannot tell whether it is required: counted as required, so /health is 503.
    assert details["queue_reader"] == {"required": True, "error": "OperationalError"}
    assert details["archive_lister"] == {"required": False, "error": "OperationalError"}
    assert "db.internal" not in str(body)


def test_opsdesk_database_down_is_a_503_with_json(tmp_path):
    """Every check that reads opsdesk's database fails with it; /health still answers its JSON."""
    from tests.test_project import run_manage

    probe = ("from django.conf import settings; settings.ALLOWED_HOSTS = ['*']\n"
             "from django.test import Client\n"
             "response = Client(raise_request_exception=False).get('/health')\n"
             "print(response.status_code, response.content.decode())")
    result = run_manage("shell", "-c", probe, DATABASE_URL=f"mysql://root@127.0.0.1:{free_port()}/opsdesk")
    status, _space, body = result.stdout.strip().splitlines()[-1].partition(" ")
    assert status == "503", result.stdout + result.stderr
    assert '"status": "fail"' in body and '"database": false' in body
