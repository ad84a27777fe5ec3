"""The OpenAPI schema, and a schema-driven property test: no input makes any endpoint answer 500."""
from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from rest_framework.test import APIClient

from backups_app.models import AuditEntry

from .test_api_auth import assert_error

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("post", "/api/v1/backup/create"),
    ("get", "/api/v1/backup/list"),
    ("get", "/api/v1/backup/{name}"),
    ("get", "/api/v1/backup/{name}/download"),
    ("post", "/api/v1/backup/restore"),
    ("post", "/api/v1/backup/cleanup"),
    ("post", "/api/v1/backup/{name}/cancel"),
    ("post", "/api/v1/restore/{restore_id}/cancel"),
}


def test_schema_is_openapi_3_and_describes_every_endpoint(api: APIClient):
    response = api.get("/api/v1/schema")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    described = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert described == OPERATIONS
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    yaml = api.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi")
    assert yaml.content.startswith(b"openapi: 3.")


def test_schema_needs_a_token(api_client: APIClient):
    assert_error(api_client.get("/api/v1/schema"), 401)


def test_no_input_makes_any_endpoint_fail_with_500(api: APIClient, staff_token, stored_backup, settings):
    """Generated from the schema itself: every operation, valid and malformed inputs alike."""
    settings.BACKUP_API_RATE_LIMIT = 100_000
    stored_backup("default-1.gz")
    schema = schemathesis.openapi.from_dict(api.get("/api/v1/schema").json())
    schema.app = get_wsgi_application()
    headers = {"Authorization": f"Bearer {staff_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(operation.method.lower(), operation.path) for operation in operations} == OPERATIONS

    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            # Bounded (and derandomized, so reruns are reproducible) to stay well under a minute.
            @hypothesis_settings(
                max_examples=30, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def no_server_error(case):
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)

            no_server_error()
    # Each generated call went through the whole stack (and was audited).
    assert AuditEntry.objects.filter(source="api", actor__contains=staff_token[:12]).count() >= 100
