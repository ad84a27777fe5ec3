"""/health's checks and authenticators come from the installed apps, or from settings when set."""
from __future__ import annotations

import pytest
from django.test import Client

from cache_app.health import default_health_check_paths, health_checks

pytestmark = pytest.mark.django_db


def test_each_app_contributes_its_checks_in_the_reported_order():
    assert [check.component for check in health_checks()] == [
        "database", "redis", "storage", "broker", "worker", "scheduler", "databases", "binlog_archiver",
    ]
    # backups_app's "database" extends cache_app's in place (it adds the backup ages).
    assert default_health_check_paths()[0] == "backups_app.health.DatabaseCheck"


def test_the_health_checks_setting_replaces_the_list(settings):
    settings.HEALTH_CHECKS = ["cache_app.health.DatabaseCheck"]
    body = Client().get("/health").json()
    assert body == {"status": "ok", "database": True}


def test_the_authenticators_setting_replaces_who_sees_the_details(settings, admin_user):
    settings.HEALTH_TOKEN = "health-token-for-the-registry-test-0123"
    settings.HEALTH_AUTHENTICATORS = ["cache_app.health.health_token"]
    client = Client()
    client.force_login(admin_user)
    assert "details" not in client.get("/health").json()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {settings.HEALTH_TOKEN}")
    assert "details" in client.get("/health").json()


@pytest.mark.parametrize("name, value", [
    ("HEALTH_CHECKS", ["backups_app.health.NoSuchCheck"]),
    ("HEALTH_CHECKS", ["cache_app.health.bearer_token"]),
    ("HEALTH_CHECKS", ["cache_app.health.HealthCheck"]),
    ("HEALTH_CHECKS", []),
    ("HEALTH_CHECKS", "cache_app.health.DatabaseCheck"),
    ("HEALTH_CHECKS", ["cache_app.health.DatabaseCheck", "backups_app.health.DatabaseCheck"]),
    ("HEALTH_AUTHENTICATORS", ["backups_app.health.no_such_function"]),
    ("HEALTH_AUTHENTICATORS", ["cache_app.conf.AppSettings"]),
])
def test_a_misconfigured_health_is_never_green(settings, admin_user, name, value):
    """A /health that cannot run its checks (or tell who sees details) answers 503, not 200 nor a 500 page."""
    setattr(settings, name, value)
    response = Client().get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail" and body["configuration"] is False and "details" not in body
    client = Client()
    client.force_login(admin_user)
    details = client.get("/health").json().get("details")
    if name == "HEALTH_CHECKS":  # staff still see why
        assert name in details["configuration"]["error"]
    else:  # nobody sees details while the authenticators cannot be trusted
        assert details is None
