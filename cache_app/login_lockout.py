"""Admin login brute-force protection on django-axes: the backend and the lockout response.

Failures are counted per username + IP by axes' database handler (AccessAttempt rows), chosen over
its cache handler on purpose: the count lives beside the users it protects, so it survives
restarts, is shared by every process and machine, and keeps working while Redis is down (a cache
handler would forget every count during a Redis outage, and a restart of Redis would unlock
everyone). A failed login is rare, so one database write per failure costs nothing that matters.
"""
from __future__ import annotations

import math

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_cool_off
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class LoginLockoutBackend(AxesStandaloneBackend):
    """axes' lockout check, skipped for `authenticate()` calls that carry no request.

    Web logins always pass the request (Django's AuthenticationForm does). Calls without one are
    not logins from a client that could be locked out: the test client's `login()`, management
    commands. axes would raise for them; they are neither counted nor checked (axes' failure
    handler ignores them as well).
    """

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def lockout_retry_after_seconds(request: HttpRequest | None = None) -> int:
    """Seconds until a locked-out client may try again.

    With AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT every refused attempt restarts the cool-off,
    and the lockout page is only shown for such an attempt, so the answer is the full cool-off.
    """
    cool_off = get_cool_off(request)
    return max(1, math.ceil(cool_off.total_seconds())) if cool_off else 3600


def lockout_response(request: HttpRequest, original_response=None, credentials: dict | None = None) -> HttpResponse:
    """429 with Retry-After, and a page that says when to try again (AXES_LOCKOUT_CALLABLE)."""
    seconds = lockout_retry_after_seconds(request)
    response = render(
        request,
        "admin/cache_app/login_locked.html",
        {"retry_after_minutes": math.ceil(seconds / 60), "failure_limit": settings.AXES_FAILURE_LIMIT},
        status=settings.AXES_HTTP_RESPONSE_CODE,
    )
    response["Retry-After"] = str(seconds)
    return response
