"""The append-only audit log: who did what, when, from where, with which outcome.

The AuditEntry writer. Other apps call the public entry point `backups_app.audit.audit_log`, which
comes here when backups_app is installed; backups_app's own modules call this one directly.
"""
from __future__ import annotations

import logging

from django.http import HttpRequest

# audit_request and client_ip are model-free and live in the public API module; imported here too
# because backups_app's own modules have always found them here.
from backups_app.audit import audit_request, client_ip, current_request  # noqa: F401
from backups_app.models import AuditEntry

logger = logging.getLogger(__name__)


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
        request = current_request()
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
