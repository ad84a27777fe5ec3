"""/health: thin view over cache_app.services.health_check_run."""
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from cache_app.services import health_check_run


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Unauthenticated (load balancers call it); publishes booleans, latencies and ages only."""
    report = health_check_run(timeout_seconds=settings.HEALTH_CHECK_TIMEOUT)
    response = JsonResponse(report.as_dict(), status=200 if report.ok else 503)
    # health_check_run already logged the failure (once per interval); django.request would log
    # an ERROR for every probe of the load balancer, every few seconds, for the whole outage.
    response._has_been_logged = True
    return response
