"""The append-only audit log: who did what, when, from where, with which outcome."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.http import HttpRequest

from backups_app.models import AuditEntry

logger = logging.getLogger(__name__)

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
) -> AuditEntry:
    """Append one entry. `actor` defaults to the user's name, or to the source ("schedule")."""
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    if request is None and ip_address is None:
        request = _current_request.get()
    if not actor:
        actor = user.get_username() if user is not None else source
    entry = AuditEntry.objects.create(
        user=user,
        actor=actor[:255],
        action=action,
        target=str(target)[:255],
        source=source,
        ip_address=ip_address or client_ip(request),
        outcome=outcome,
        detail=detail,
    )
    logger.info("audit: %s %s %s %s -> %s", entry.source, entry.actor, action, entry.target, outcome)
    return entry
