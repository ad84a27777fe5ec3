"""Everything in secrets_app that changes state or touches the outside world."""
from __future__ import annotations

import logging
import secrets as secrets_module
import time
from dataclasses import dataclass

from django.db import DatabaseError, transaction
from django.views.decorators.debug import sensitive_variables

# The audit log's public entry point (works with or without backups_app installed).
from backups_app.audit import audit_log
from secrets_app.conf import app_settings
from secrets_app.exceptions import RotationRefused, SecretsError
from secrets_app.manager import HIT, SecretManager, SecretStatus, default_manager, secrets_actor
from secrets_app.models import KnownSecret, SecretAccess
from secrets_app.selectors import known_secret_names

logger = logging.getLogger("secrets_app")

_last_flush = 0.0


def secrets_access_flush(*, manager: SecretManager | None = None, quiet: bool = False) -> int:
    """Write the buffered access events, aggregated hit counts and known-secret status.

    Returns the number of access-log rows written. A database failure is logged, not raised:
    the access log must never break the request or task it follows.
    """
    manager = manager or default_manager
    manager.send_alerts()
    if not manager.pending():
        return 0
    events, hits, entries = manager.drain()
    from django.utils import timezone

    now = timezone.now()
    rows = [
        SecretAccess(created_at=event.created_at, name=event.name, provider=event.provider,
                     outcome=event.outcome, count=event.count, actor=event.actor, detail=event.detail)
        for event in events
    ]
    from secrets_app.access_log import process_actor as _process_actor

    rows += [
        SecretAccess(created_at=now, name=name, provider=manager.provider.name, outcome=HIT,
                     count=count, actor=_process_actor())
        for name, count in hits.items() if count
    ]
    try:
        with transaction.atomic():
            SecretAccess.objects.bulk_create(rows)
            for name, entry in entries.items():
                KnownSecret.objects.update_or_create(name=name, defaults={
                    "required": manager.known.get(name, False),
                    "provider": manager.provider.name, "source": entry.source, "status": entry.status,
                    "version": entry.version[:255], "fingerprint": entry.fingerprint,
                    "resolved_at": entry.resolved_at,
                })
    except DatabaseError as error:
        # Tables not migrated yet (first `migrate`), database down: the log loses these lines.
        logger.log(logging.DEBUG if quiet else logging.WARNING,
                   "Secret access log not written (%s): %d lines dropped.", type(error).__name__, len(rows))
        return 0
    return len(rows)


def secrets_access_flush_soon(**kwargs) -> None:
    """Signal receiver (request_finished, task_postrun): flush at most every few seconds."""
    global _last_flush
    now = time.monotonic()
    if now - _last_flush < app_settings.SECRETS_ACCESS_LOG_FLUSH_SECONDS:
        return
    _last_flush = now
    secrets_access_flush()


def secrets_access_flush_at_exit() -> None:
    try:
        # Quiet: at exit of `manage.py check` before the first `migrate` the tables do not exist yet.
        secrets_access_flush(quiet=True)
    except Exception as error:  # noqa: BLE001 - interpreter shutdown: log and leave
        logger.warning("Secret access log not written at exit (%s).", type(error).__name__)


@dataclass(frozen=True)
class RotationResult:
    """What a rotation did. The fingerprint identifies the new version; there is no value here."""

    name: str
    provider: str
    version: str
    fingerprint: str
    broadcast: bool


def _check_new_value(value: str) -> None:
    if not value:
        raise RotationRefused("The new value is empty.")
    if any(character in value for character in "\r\n\x00"):
        raise RotationRefused("The new value must be one line without NUL characters.")


@sensitive_variables()
def secret_rotate(
    *,
    name: str,
    value: str | None = None,
    generate: bool = False,
    length: int = 50,
    source: str,
    user=None,
    actor: str = "",
    manager: SecretManager | None = None,
) -> RotationResult:
    """Write a new version of ``name`` to the provider and make every process drop the old one.

    With Redis configured (SECRETS_REDIS_URL) every process drops it within seconds; otherwise each
    process sees it when its cached value expires (SECRETS_CACHE_TTL). Audited as rotate_secret.
    """
    manager = manager or default_manager
    if generate == (value is not None):
        raise RotationRefused("Give either a new value or generate=True.")
    if generate:
        # URL-safe: survives .env quoting, shell exports and connection strings unchanged.
        value = secrets_module.token_urlsafe(max(32, length))[:max(32, length)]
    _check_new_value(value)
    actor = actor or (user.get_username() if user is not None else source)
    try:
        with secrets_actor(actor):
            version = manager.provider.set(name, value)
            manager.invalidate(name)
            entry = manager.refresh(name)
    except SecretsError as error:
        audit_log(action="rotate_secret", source=source, outcome="failure", user=user, actor=actor,
                  target=name, detail=str(error))
        raise
    fingerprint = manager.fingerprint(value)
    if entry.fingerprint != fingerprint:
        logger.warning("Secret %s: the provider does not return the new version yet (eventual consistency).", name)
    broadcast = False
    if manager.rotation_redis_url:
        try:
            from secrets_app.rotation import rotation_publish

            rotation_publish(redis_url=manager.rotation_redis_url, prefix=manager.rotation_prefix, name=name)
            broadcast = True
        except Exception as error:  # noqa: BLE001 - the new value is stored; only the broadcast failed
            logger.warning("Secret %s rotated, but Redis could not announce it (%s): other processes see it "
                           "within SECRETS_CACHE_TTL.", name, type(error).__name__)
    detail = f"version {version or '-'}, fingerprint {fingerprint}, " + (
        "announced through Redis" if broadcast else "other processes see it within the cache TTL")
    manager.record_rotation(name, actor=actor, detail=detail)
    audit_log(action="rotate_secret", source=source, outcome="success", user=user, actor=actor,
              target=name, detail=detail)
    secrets_access_flush(manager=manager)
    return RotationResult(name=name, provider=manager.provider.name, version=version,
                          fingerprint=fingerprint, broadcast=broadcast)


def secrets_provider_check(*, actor: str, manager: SecretManager | None = None) -> str:
    """Test the provider connection with its configured credentials; raises SecretsError."""
    manager = manager or default_manager
    with secrets_actor(actor):
        description = manager.provider.check()
    logger.info("Secret provider check by %s: %s", actor, description)
    return description


def secrets_check(*, names: list[str] | None = None, manager: SecretManager | None = None) -> list[SecretStatus]:
    """Resolve every known secret (or only ``names``) from its provider now; one status per
    secret, no values."""
    manager = manager or default_manager
    statuses = []
    known = known_secret_names(manager=manager)
    if names is not None:
        known = {name: known.get(name, False) for name in names}
    for name, required in known.items():
        manager.known[name] = manager.known.get(name, False) or required
        status = manager.status(name)
        statuses.append(status)
    secrets_access_flush(manager=manager)
    return statuses
