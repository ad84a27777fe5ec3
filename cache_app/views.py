"""/health and /metrics: thin views over cache_app.services.health_check_run and cache_app.metrics."""
from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from cache_app.conf import app_settings
from cache_app.health import HealthConfigurationError, health_authenticators
from cache_app.metrics import metrics_access, metrics_render
from cache_app.services import health_check_run, health_configuration_failure

logger = logging.getLogger("cache_app.metrics")


def may_see_details(request: HttpRequest) -> bool:
    """Details (database aliases, backup times, free disk space) are for staff only.

    A staff session, the HEALTH_TOKEN secret as `Authorization: Bearer ...` (for a monitoring
    system that has no user), or what another app contributes (backups_app: an API token of an
    active staff user): see cache_app.health.health_authenticators.
    """
    return any(authenticator(request) for authenticator in health_authenticators())


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Unauthenticated (load balancers call it): anonymous callers get the booleans only."""
    report = health_check_run(timeout_seconds=app_settings.HEALTH_CHECK_TIMEOUT)
    try:
        details = may_see_details(request)
    except HealthConfigurationError as error:
        # Nobody sees the details, and /health is not green, until HEALTH_AUTHENTICATORS is fixed.
        details = False
        report.results.append(health_configuration_failure(error))
    response = JsonResponse(report.as_dict(details=details), status=200 if report.ok else 503)
    # health_check_run already logged the failure (once per interval); django.request would log
    # an ERROR for every probe of the load balancer, every few seconds, for the whole outage.
    response._has_been_logged = True
    return response


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition, for a METRICS_TOKEN Bearer token or an address in METRICS_ALLOWED_IPS."""
    refusal = metrics_access(request=request)
    if refusal is not None:
        response = HttpResponse(status=refusal)
        if refusal == 401:
            response["WWW-Authenticate"] = 'Bearer realm="opsdesk metrics"'
        return response
    try:
        body, content_type = metrics_render(accept=request.headers.get("Accept", ""))
    except DatabaseError as error:
        # Prometheus records the failed scrape (`up` stays 1, the series go stale); one line, no
        # traceback of a driver message that may name hosts.
        logger.error("/metrics: opsdesk's database cannot be read (%s).", type(error).__name__)
        return HttpResponse("opsdesk database unavailable\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=content_type)
