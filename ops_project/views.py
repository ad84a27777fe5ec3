"""Project-wide error views."""
from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views import defaults


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django answers every SuspiciousOperation with 400; a body over DATA_UPLOAD_MAX_MEMORY_SIZE is
    413 Content Too Large, which tells the client what to change (docs/FAULTS.md: oversized-request)."""
    if isinstance(exception, RequestDataTooBig):
        message = _("The request body is too large.")
        if request.path.startswith("/api/"):
            return JsonResponse({"error": "request_too_large", "detail": message}, status=413)
        return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
    return defaults.bad_request(request, exception)
