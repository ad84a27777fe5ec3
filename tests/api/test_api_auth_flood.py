"""Failed authentication is throttled per client address, and what the audit log keeps is capped.

docs/FAULTS.md: anonymous-flood. DRF throttles run after authentication, so the count lives in the
authentication class.
"""
from __future__ import annotations

import pytest

from backups_app.models import AuditEntry

from .test_api_auth import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_budget(settings):
    settings.BACKUP_API_AUTH_FAILURE_LIMIT = 3
    settings.BACKUP_API_AUTH_FAILURE_PERIOD = 60


def test_anonymous_calls_get_429_once_over_budget_and_stop_filling_the_audit_log(api_client, small_budget):
    for _ in range(3):
        assert_error(api_client.get("/api/v1/backup/list"), 401)
    for _ in range(5):
        response = api_client.get("/api/v1/backup/list")
        assert_error(response, 429)
        assert 1 <= int(response["Retry-After"]) <= 60
    # Three refusals and the first throttled call; the flood after it writes nothing.
    assert AuditEntry.objects.filter(source="api").count() == 4
    assert "further ones are not logged" in AuditEntry.objects.latest("id").detail


def test_bad_tokens_count_too_and_a_good_token_still_works(api_client, small_budget, staff_token):
    for _ in range(3):
        assert_error(api_client.get("/api/v1/backup/list", HTTP_AUTHORIZATION="Bearer ops_wrong"), 401)
    assert_error(api_client.get("/api/v1/backup/list", HTTP_AUTHORIZATION="Bearer ops_wrong"), 429)
    # Same address, valid token: a neighbour behind the same NAT is not locked out.
    assert api_client.get("/api/v1/backup/list", HTTP_AUTHORIZATION=f"Bearer {staff_token}").status_code == 200


def test_other_addresses_have_their_own_budget(api_client, small_budget):
    for _ in range(4):
        api_client.get("/api/v1/backup/list", REMOTE_ADDR="203.0.113.7")
    assert_error(api_client.get("/api/v1/backup/list", REMOTE_ADDR="198.51.100.9"), 401)


def test_a_huge_path_is_capped_in_the_audit_row(api_client):
    path = "/api/v1/" + "A" * 50_000
    assert api_client.get(path).status_code in (401, 404)
    entry = AuditEntry.objects.get(source="api")
    assert len(entry.detail) < 400 and len(entry.target) <= 255
