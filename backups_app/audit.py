"""The audit log's public entry point: the one module every app (and a host project) writes through.

    from backups_app.audit import audit_log

    audit_log(action="rotate_secret", source="cli", outcome="success", user=user, target=name)

The log is project-wide; its table (`AuditEntry`) lives in backups_app only because that is where
it was born, and moving a model between apps means migrations across apps. This module is the
stable API in front of it: it imports no model at import time, so secrets_app and cache_app work
with or without backups_app in INSTALLED_APPS. With backups_app installed, entries go to the
AuditEntry table (`backups_app.services.audit`, which backups_app's own services call directly);
without it, to the `opsdesk.audit` logger, so an audited action is never silently lost.

Chosen over a dotted-path setting (OPSDESK_AUDIT_HANDLER): there are exactly two writers and
INSTALLED_APPS already says which one applies; a setting would be a second switch for the same
fact, and one more way to misconfigure the audit trail.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.apps import apps
from django.http import HttpRequest

__all__ = ["audit_log", "audit_request", "client_ip"]

logger = logging.getLogger("opsdesk.audit")

# The request on whose behalf services are running, for entries written by services that take no
# request argument (backup_queue, restore_queue, backup_delete, ...): see audit_request().
_current_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)


@contextmanager
def audit_request(request: HttpRequest) -> Iterator[None]:
    """Entries written inside this block without a request of their own carry `request`'s address.

    Views wrap their service calls in it, so that the services' own audit entries say from which
    IP the operation came without every service growing a `request` argument.
    """
    token = _current_request.set(request)
    try:
        yield
    finally:
        _current_request.reset(token)


def current_request() -> HttpRequest | None:
    """The request set by the innermost audit_request() block, if any."""
    return _current_request.get()


def client_ip(request: HttpRequest | None) -> str | None:
    """The caller's address as the WSGI server saw it.

    X-Forwarded-For is not trusted here: any client can set it, and an audit log must not be
    forgeable. Behind a proxy, have the proxy set REMOTE_ADDR (gunicorn --forwarded-allow-ips).
    """
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_log(
    *,
    action: str,
    source: str,
    outcome: str,
    user=None,
    actor: str = "",
    target: str = "",
    request: HttpRequest | None = None,
    ip_address: str | None = None,
    detail: str = "",
) -> Any:
    """Append one entry to the audit log; returns the AuditEntry, or None when only logged.

    `action` names the operation ("rotate_secret"), `source` where it came from ("admin", "cli",
    "api", "schedule"), `outcome` one of "success", "failure", "refused". `actor` defaults to the
    user's name, or to the source. The address comes from `ip_address`, else `request`, else the
    request of the enclosing audit_request() block.
    """
    arguments = {
        "action": action, "source": source, "outcome": outcome, "user": user, "actor": actor,
        "target": target, "request": request, "ip_address": ip_address, "detail": detail,
    }
    if apps.is_installed("backups_app"):
        from backups_app.services.audit import audit_log as audit_entry_create

        return audit_entry_create(**arguments)
    _audit_log_to_logger(**arguments)
    return None


def _audit_log_to_logger(*, action, source, outcome, user, actor, target, request, ip_address, detail) -> None:
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    if not actor:
        actor = user.get_username() if user is not None else source
    if request is None and ip_address is None:
        request = _current_request.get()
    logger.info(
        "audit: %s %s %s %s -> %s (from %s) %s",
        source, actor, action, target, outcome, ip_address or client_ip(request) or "-", detail,
    )
