"""The REST API's policy, carried by its views instead of the project's REST_FRAMEWORK setting.

REST_FRAMEWORK is one setting for a whole project: a project that installs opsdesk keeps its own
(session or Basic authentication, its renderers, no throttling...) for its own API. opsdesk's views
therefore name everything they rely on: Bearer tokens only (no session cookies, so no CSRF
surface), staff only by default, the per-token rate limit, JSON in and out, JSON error bodies, no
versioning scheme and drf-spectacular's schema inspector.
"""
from __future__ import annotations

from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.schemas.inspectors import ViewInspector

from backups_app.api.authentication import ApiTokenAuthentication
from backups_app.api.exceptions import api_exception_handler
from backups_app.api.negotiation import JsonFallbackContentNegotiation
from backups_app.api.permissions import IsStaffToken
from backups_app.api.throttling import ApiTokenRateThrottle


class SpectacularSchema(ViewInspector):
    """drf-spectacular's AutoSchema for each view, whatever DEFAULT_SCHEMA_CLASS the project sets.

    A descriptor like DRF's own DefaultSchema: one inspector per access, never shared by views.
    """

    def __get__(self, instance, owner):
        result = super().__get__(instance, owner)
        if not isinstance(result, SpectacularSchema):
            return result
        inspector = AutoSchema()
        inspector.view = instance
        return inspector


def api_schema(**kwargs):
    """drf-spectacular's `extend_schema` for a view method, built on its AutoSchema.

    `extend_schema` on a method builds on REST_FRAMEWORK's DEFAULT_SCHEMA_CLASS as it is when the
    module is imported; a host project that leaves DRF's own there would make the schema endpoint
    fail (500) on every method so decorated. A schema class already on the method comes first.
    """
    def decorator(method):
        method.kwargs = {**getattr(method, "kwargs", {}), "schema": AutoSchema}
        return extend_schema(**kwargs)(method)

    return decorator


class ApiSchemaGenerator(SchemaGenerator):
    """The schema of opsdesk's API alone: in a host project the URLconf holds the host's DRF views
    too, which opsdesk's tokens must not be shown (nor their inputs)."""

    def _initialise_endpoints(self):
        super()._initialise_endpoints()
        self.endpoints = [endpoint for endpoint in self.endpoints
                          if issubclass(getattr(endpoint[3], "cls", object), ApiPolicyMixin)]


class ApiPolicyMixin:
    """First among a view's bases, so that its attributes win over DRF's project-wide defaults."""

    authentication_classes = [ApiTokenAuthentication]
    permission_classes = [IsStaffToken]
    throttle_classes = [ApiTokenRateThrottle]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]
    content_negotiation_class = JsonFallbackContentNegotiation
    # Unversioned (/api/v1/ is in the path): a host's DEFAULT_VERSIONING_CLASS with its
    # ALLOWED_VERSIONS would answer 404/406 to every opsdesk call. Nor the host's list filters.
    versioning_class = None
    filter_backends: list = []
    schema = SpectacularSchema()

    def get_exception_handler(self):
        return api_exception_handler
