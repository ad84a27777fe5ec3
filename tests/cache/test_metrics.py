"""/metrics: who may scrape it, what it says about the records, what a scrape costs, the alert rules."""
from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from backups_app.models import BackupRecord, DirtyDatabase, ProcessHeartbeat, RestoreRecord
from secrets_app import default_manager
from secrets_app.models import KnownSecret, SecretAccess
from secrets_app.providers.local import LocalProvider
from tests.cache.conftest import free_port, use_redis
from tests.conftest import services_required

pytestmark = pytest.mark.django_db

PROMETHEUS_DOCS = Path(__file__).resolve().parents[2] / "docs" / "prometheus"
COMMON = {"engine": "sqlite", "trigger": "schedule", "compression": "gzip"}


@pytest.fixture
def metrics_token():
    """A fresh METRICS_TOKEN served by the process-wide secret manager for one test."""
    saved = {key: dict(value) if isinstance(value, dict) else value for key, value in vars(default_manager).items()}
    token = secrets.token_urlsafe(32)
    default_manager.configure(provider=LocalProvider(environ={"METRICS_TOKEN": token}), fallback=None)
    yield token
    default_manager.__dict__.update(saved)


@pytest.fixture
def no_metrics_token():
    saved = {key: dict(value) if isinstance(value, dict) else value for key, value in vars(default_manager).items()}
    default_manager.configure(provider=LocalProvider(environ={}), fallback=None)
    yield
    default_manager.__dict__.update(saved)


def scrape(client, token: str, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}", REMOTE_ADDR="192.0.2.10", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def backup(name: str, *, database: str = "default", status: str = "success", age: timedelta, **fields) -> BackupRecord:
    moment = timezone.now() - age
    ended = moment + timedelta(seconds=fields.get("duration_seconds") or 0)
    return BackupRecord.objects.create(
        name=name, database=database, status=status, created_at=moment,
        finished_at=ended if status not in ("queued", "running") else None, **COMMON, **fields,
    )


# --- Access ------------------------------------------------------------------------------------


def test_loopback_scrapes_without_a_token(client, no_metrics_token):
    response = client.get("/metrics")  # the test client connects from 127.0.0.1
    assert response.status_code == 200
    assert b"opsdesk_backup_last_success_timestamp_seconds" in response.content
    assert "no-store" in response["Cache-Control"]
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_other_addresses_need_the_token(client, metrics_token):
    refused = client.get("/metrics", REMOTE_ADDR="192.0.2.10")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert b"opsdesk_" not in refused.content
    allowed = client.get("/metrics", REMOTE_ADDR="192.0.2.10", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")
    assert allowed.status_code == 200


def test_without_a_configured_token_other_addresses_are_forbidden(client, no_metrics_token):
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.10").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.10", HTTP_AUTHORIZATION="Bearer ").status_code == 403


@pytest.mark.parametrize("header", ["Bearer wrong", "Basic dXNlcjpwYXNz", "Bearer", "Token {token}"])
def test_a_wrong_token_is_refused_even_from_loopback(client, metrics_token, header):
    response = client.get("/metrics", HTTP_AUTHORIZATION=header.format(token=metrics_token))
    assert response.status_code == 401
    assert b"opsdesk_" not in response.content


@pytest.mark.parametrize("header", ["HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP"])
def test_a_request_forwarded_by_a_local_proxy_is_not_trusted_by_address(client, metrics_token, header):
    # A reverse proxy on the same host connects from 127.0.0.1 on behalf of anyone on the internet.
    assert client.get("/metrics", **{header: "203.0.113.7"}).status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}", **{header: "203.0.113.7"}).status_code == 200


def test_allowed_networks_come_from_the_setting(client, settings, no_metrics_token):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "2001:db8::/32"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="2001:db8::5").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="not-an-address").status_code == 403


def test_only_get_and_head(client, no_metrics_token):
    assert client.post("/metrics").status_code == 405
    assert client.head("/metrics").status_code == 200


def test_a_malformed_allowed_address_stops_start_up_with_one_line(tmp_path):
    from tests.test_project import run_manage

    result = run_manage("check", METRICS_ALLOWED_IPS="127.0.0.1,10.0.0.0/33",
                        DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "opsdesk: METRICS_ALLOWED_IPS: entry 2 is not an IP address or network (e.g. 10.0.0.0/8)."
    ]


class BrokenCollector:
    def collect(self):
        raise DatabaseError("connection to server at db.internal failed")


def test_an_unreadable_database_answers_503_without_details(client, settings, no_metrics_token):
    settings.METRICS_COLLECTORS = ["tests.cache.test_metrics.BrokenCollector"]
    response = client.get("/metrics")
    assert response.status_code == 503
    assert b"db.internal" not in response.content


# --- What it says ------------------------------------------------------------------------------


# backup_databases() reads the aliases from settings.DATABASES; no connection to `chat` is opened.
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_scrape_reports_the_records(client, settings, metrics_token):
    settings.DATABASES = {**settings.DATABASES, "chat": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    settings.BACKUP_OFFSITE_BUCKET = "opsdesk-test"
    settings.STORAGES = {**settings.STORAGES, "backups_offsite": {"BACKEND": "storages.backends.s3.S3Storage"}}

    # chat: an old good backup copied offsite, then two good ones waiting for their copy (the
    # older of them, 5 hours ago, is how far the bucket is behind), then a failure.
    backup("chat-1", database="chat", age=timedelta(days=2), duration_seconds=30, size_bytes=100,
           offsite_status="uploaded", verification_status="verified",
           verified_at=timezone.now() - timedelta(days=1))
    backup("chat-2", database="chat", age=timedelta(hours=5), offsite_status="failed", size_bytes=150)
    newest = backup("chat-3", database="chat", age=timedelta(hours=3), duration_seconds=42.5, size_bytes=2048,
                    offsite_status="pending", verification_status="failed",
                    verified_at=timezone.now() - timedelta(hours=1))
    failed = backup("chat-4", database="chat", status="failed", age=timedelta(hours=1), duration_seconds=2)
    backup("chat-5", database="chat", status="running", age=timedelta(minutes=1))
    # default: only a failed backup, never a good one.
    backup("default-1", status="interrupted", age=timedelta(hours=4))
    # Records of a database no longer configured are left out; uploaded files (media) are not in
    # DATABASES but count.
    backup("gone-1", database="gone", age=timedelta(hours=1))
    media = backup("media-1", database="media", age=timedelta(hours=6), size_bytes=4096)
    RestoreRecord.objects.create(backup_name="chat-1", database="chat", status="success", trigger="cli")
    RestoreRecord.objects.create(backup_name="chat-1", database="chat", status="failed", trigger="cli")
    RestoreRecord.objects.create(backup_name="chat-2", database="chat", status="failed", trigger="cli")
    SecretAccess.objects.bulk_create([
        SecretAccess(created_at=timezone.now(), name="SGP_TOKEN", provider="vault", outcome=outcome, count=count,
                     actor="test", detail=detail)
        for outcome, count, detail in [
            ("stale", 3, "vault unreachable"), ("denied", 1, "permission denied"),
            ("fallback", 2, "vault unreachable"), ("fallback", 7, "not in vault"), ("missing", 5, ""),
            ("hit", 100, ""), ("fetched", 4, ""),
        ]
    ])
    DirtyDatabase.objects.create(database="chat", backup_name="chat-1")
    KnownSecret.objects.create(name="SGP_TOKEN", required=True, status="stale")
    KnownSecret.objects.create(name="GEMINI_API_KEY", status="missing")

    samples = scrape(client, metrics_token)

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("opsdesk_backup_last_success_timestamp_seconds", database="chat") == pytest.approx(
        newest.finished_at.timestamp())
    assert value("opsdesk_backup_last_success_timestamp_seconds", database="default") == 0
    assert value("opsdesk_backup_last_success_duration_seconds", database="chat") == 42.5
    assert value("opsdesk_backup_last_success_size_bytes", database="chat") == 2048
    assert ("opsdesk_backup_last_success_size_bytes", (("database", "default"),)) not in samples
    assert value("opsdesk_backup_last_failure_timestamp_seconds", database="chat") == pytest.approx(
        failed.finished_at.timestamp())
    assert value("opsdesk_backup_last_failure_timestamp_seconds", database="default") > 0

    assert value("opsdesk_backups", database="chat", status="success") == 3
    assert value("opsdesk_backups", database="chat", status="failed") == 1
    assert value("opsdesk_backups", database="chat", status="running") == 1
    assert value("opsdesk_backups", database="chat", status="queued") == 0
    assert value("opsdesk_backups", database="default", status="interrupted") == 1
    assert not any(dict(labels).get("database") == "gone" for _, labels in samples)
    assert value("opsdesk_backups", database="media", status="success") == 1
    assert value("opsdesk_backup_last_success_timestamp_seconds", database="media") == pytest.approx(
        media.finished_at.timestamp())
    assert value("opsdesk_restores", database="media", status="success") == 0

    assert value("opsdesk_backup_verifications", database="chat", result="verified") == 1
    assert value("opsdesk_backup_verifications", database="chat", result="failed") == 1
    assert value("opsdesk_backup_last_verification_success", database="chat") == 0
    assert value("opsdesk_backup_last_verification_timestamp_seconds", database="chat") == pytest.approx(
        newest.verified_at.timestamp())
    assert ("opsdesk_backup_last_verification_success", (("database", "default"),)) not in samples

    assert 5 * 3600 - 5 <= value("opsdesk_backup_offsite_lag_seconds", database="chat") <= 5 * 3600 + 300
    assert value("opsdesk_backup_offsite_lag_seconds", database="default") == 0

    assert value("opsdesk_restores", database="chat", status="success") == 1
    assert value("opsdesk_restores", database="chat", status="failed") == 2
    assert value("opsdesk_restores", database="default", status="refused") == 0

    assert value("opsdesk_database_dirty", database="chat") == 1
    assert value("opsdesk_database_dirty", database="default") == 0

    # Provider errors only: not "not in vault", not a plain miss, not hits.
    assert value("opsdesk_secret_provider_errors_total", provider="vault", outcome="stale") == 3
    assert value("opsdesk_secret_provider_errors_total", provider="vault", outcome="denied") == 1
    assert value("opsdesk_secret_provider_errors_total", provider="vault", outcome="fallback") == 2
    assert ("opsdesk_secret_provider_errors_total", (("outcome", "missing"), ("provider", "vault"))) not in samples
    assert value("opsdesk_secrets", status="stale", required="true") == 1
    assert value("opsdesk_secrets", status="missing", required="false") == 1

    # Redis is not configured in the tests: no gauge rather than a false "down".
    assert not any(name == "opsdesk_redis_up" for name, _ in samples)


def test_offsite_lag_is_left_out_when_offsite_copies_are_off(client, metrics_token):
    backup("b", age=timedelta(hours=1), offsite_status="pending")
    assert not any(name == "opsdesk_backup_offsite_lag_seconds" for name, _ in scrape(client, metrics_token))


def test_offsite_lag_is_zero_once_the_newest_good_backup_is_copied(client, settings, metrics_token):
    settings.BACKUP_OFFSITE_BUCKET = "opsdesk-test"
    settings.STORAGES = {**settings.STORAGES, "backups_offsite": {"BACKEND": "storages.backends.s3.S3Storage"}}
    # An upload that failed for good long ago is history once a newer backup reached the bucket.
    backup("old", age=timedelta(days=3), offsite_status="failed")
    backup("new", age=timedelta(hours=2), offsite_status="uploaded")
    assert scrape(client, metrics_token)[("opsdesk_backup_offsite_lag_seconds", (("database", "default"),))] == 0


def test_openmetrics_when_asked(client, metrics_token):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}",
                          HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


@pytest.mark.services
def test_redis_up_and_down(client, settings, metrics_token, machine_redis):
    assert scrape(client, metrics_token)[("opsdesk_redis_up", ())] == 1
    use_redis(settings, f"redis://127.0.0.1:{free_port()}/0", "opsdesk-metrics-down")
    assert scrape(client, metrics_token)[("opsdesk_redis_up", ())] == 0


def test_worker_scheduler_and_queue_from_the_heartbeats(client, settings, metrics_token):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"  # only read, never connected to here
    samples = scrape(client, metrics_token)
    assert samples[("opsdesk_worker_alive", ())] == 0
    assert samples[("opsdesk_scheduler_alive", ())] == 0
    assert samples[("opsdesk_queue_depth", ())] == 0

    now = timezone.now()
    for component, queues in [("worker", f"celery {settings.CELERY_TASK_DEFAULT_QUEUE}"), ("scheduler", "")]:
        ProcessHeartbeat.objects.create(component=component, host="test-host", pid=4242, queues=queues,
                                        started_at=now, seen_at=now)
    backup("waiting-1", status="queued", age=timedelta(minutes=10))
    RestoreRecord.objects.create(backup_name="x", database="default", status="queued", trigger="cli")
    samples = scrape(client, metrics_token)
    assert samples[("opsdesk_worker_alive", ())] == 1
    assert samples[("opsdesk_scheduler_alive", ())] == 1
    assert samples[("opsdesk_queue_depth", ())] == 2

    # A heartbeat that stopped three intervals ago belongs to a process that is gone.
    ProcessHeartbeat.objects.update(seen_at=now - timedelta(seconds=settings.BACKUP_HEARTBEAT_SECONDS * 4))
    samples = scrape(client, metrics_token)
    assert samples[("opsdesk_worker_alive", ())] == 0
    assert samples[("opsdesk_scheduler_alive", ())] == 0


def test_without_a_broker_no_worker_can_be_missing(client, metrics_token):
    # Each job then runs in a background process of its own (backups_app.jobs).
    assert scrape(client, metrics_token)[("opsdesk_worker_alive", ())] == 1


# --- Cost --------------------------------------------------------------------------------------


def _bulk_backups(count: int) -> None:
    now = timezone.now()
    statuses = ["success", "success", "success", "failed", "interrupted"]
    BackupRecord.objects.bulk_create([
        BackupRecord(
            name=f"bulk-{index}", database="default", status=statuses[index % len(statuses)],
            created_at=now - timedelta(minutes=index), finished_at=now - timedelta(minutes=index),
            duration_seconds=1, size_bytes=index, verification_status=["unverified", "verified", "failed"][index % 3],
            verified_at=now - timedelta(minutes=index) if index % 3 else None,
            offsite_status=["uploaded", "pending", "failed", "not_configured"][index % 4], **COMMON,
        )
        for index in range(count)
    ], batch_size=1000)
    RestoreRecord.objects.bulk_create([
        RestoreRecord(backup_name=f"bulk-{index}", database="default", status="success", trigger="cli")
        for index in range(count // 10)
    ], batch_size=1000)
    SecretAccess.objects.bulk_create([
        SecretAccess(created_at=now, name="X", provider="vault", outcome="stale", count=1, actor="t", detail="down")
        for _ in range(count // 10)
    ], batch_size=1000)


def _queries_per_scrape(client, token) -> int:
    with CaptureQueriesContext(connection) as queries:
        scrape(client, token)
    return len(queries)


def test_a_scrape_costs_the_same_handful_of_queries_for_10_and_10000_records(
    client, settings, metrics_token, django_assert_max_num_queries
):
    # Only the scrape's own queries: no secret access-log flush at the end of the request.
    settings.SECRETS_ACCESS_LOG_FLUSH_SECONDS = 10**9
    settings.BACKUP_OFFSITE_BUCKET = "opsdesk-test"
    settings.STORAGES = {**settings.STORAGES, "backups_offsite": {"BACKEND": "storages.backends.s3.S3Storage"}}
    _bulk_backups(10)
    few = _queries_per_scrape(client, metrics_token)
    BackupRecord.objects.all().delete()
    _bulk_backups(10_000)
    with django_assert_max_num_queries(few):
        samples = scrape(client, metrics_token)
    assert samples[("opsdesk_backups", (("database", "default"), ("status", "success")))] == 6000
    # Backups grouped, newest good rows, offsite lag, restores, dirty marks, heartbeats (none
    # without a broker), queued backups and restores, secret errors, secrets by status.
    assert few <= 12


# --- The shipped Prometheus and Grafana files --------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (Debian package `prometheus`; .ci/run installs it)"
        if services_required():
            pytest.fail(f"{message}; OPSDESK_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    return path


def test_alert_rules_pass_promtool_check():
    result = subprocess.run([promtool(), "check", "rules", str(PROMETHEUS_DOCS / "alerts.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_promtool_unit_tests():
    result = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], cwd=PROMETHEUS_DOCS,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _exported_names(client, settings, token) -> set[str]:
    settings.BACKUP_OFFSITE_BUCKET = "opsdesk-test"
    settings.STORAGES = {**settings.STORAGES, "backups_offsite": {"BACKEND": "storages.backends.s3.S3Storage"}}
    backup("b", age=timedelta(hours=1), verification_status="verified", verified_at=timezone.now(),
           duration_seconds=3, size_bytes=10)
    SecretAccess.objects.create(created_at=timezone.now(), name="X", provider="vault", outcome="stale", actor="t",
                                detail="down")
    names = {name for name, _ in scrape(client, token)}
    # Only exported when Redis is configured, and for databases that archive their binlog.
    return names | {"opsdesk_redis_up", "opsdesk_pitr_gaps", "opsdesk_pitr_archiver_running"}


def _metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\b(opsdesk_[a-z_]+)\b", expression))


def test_alerts_and_dashboard_only_use_exported_metrics(client, settings, metrics_token):
    import yaml

    exported = _exported_names(client, settings, metrics_token)
    rules = yaml.safe_load((PROMETHEUS_DOCS / "alerts.yml").read_text())
    used = set().union(*(_metric_names(rule["expr"]) for group in rules["groups"] for rule in group["rules"]))
    dashboard = json.loads((PROMETHEUS_DOCS / "grafana-dashboard.json").read_text())
    panels = [panel for row in dashboard["panels"] for panel in [row, *row.get("panels", [])]]
    expressions = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    assert expressions
    used |= set().union(*(_metric_names(expression) for expression in expressions))
    assert used - exported == set()
    # Per-database panels repeat over the `database` variable.
    assert any(variable["name"] == "database" for variable in dashboard["templating"]["list"])


def test_the_point_in_time_window_and_its_gaps_are_scraped(client, metrics_token):
    from backups_app.models import BinlogArchiver, BinlogSegment

    now = timezone.now().replace(microsecond=0)
    base = backup("chat-base", database="chat", age=timedelta(hours=2), duration_seconds=1,
                  binlog_file="mysql-bin.000001", binlog_position=400)

    def segment(name: str, start: int, end: int, last_event_age: timedelta, status=BinlogSegment.Status.OK):
        return BinlogSegment.objects.create(
            database="chat", name=name, storage_name=name, binlog_file="mysql-bin.000001",
            start_position=start, end_position=end, first_event_at=now - timedelta(hours=3),
            last_event_at=now - last_event_age, compression="zstd", raw_size_bytes=end - start,
            size_bytes=10, sha256="0" * 64, status=status,
        )

    segment("seg-1", 0, 1000, timedelta(minutes=30))
    segment("seg-2", 1000, 2000, timedelta(minutes=1))
    BinlogArchiver.objects.create(database="chat", heartbeat_at=timezone.now())

    samples = scrape(client, metrics_token)
    chat = (("database", "chat"),)
    assert samples[("opsdesk_pitr_window_end_timestamp_seconds", chat)] == (now - timedelta(minutes=1)).timestamp()
    assert samples[("opsdesk_pitr_window_start_timestamp_seconds", chat)] <= base.created_at.timestamp() + 1
    assert samples[("opsdesk_pitr_gaps", chat)] == 0
    assert samples[("opsdesk_pitr_archiver_running", chat)] == 1
    assert samples[("opsdesk_pitr_offsite_recovery_point_timestamp_seconds", chat)] == 0

    segment("seg-3", 2000, 3000, timedelta(seconds=10), status=BinlogSegment.Status.CORRUPT)
    assert scrape(client, metrics_token)[("opsdesk_pitr_gaps", chat)] == 1
