"""Read-only queries about secrets. No values."""
from __future__ import annotations

from django.db import connections

from secrets_app.conf import app_settings
from secrets_app.manager import SecretManager, default_manager
from secrets_app.models import KnownSecret


def known_secret_names(*, manager: SecretManager | None = None) -> dict[str, bool]:
    """Every secret opsdesk knows, with whether it is required.

    Union of what this process asked for (settings read them at start-up), SECRETS_REQUIRED, and
    the names other processes recorded in the database.
    """
    manager = manager or default_manager
    names: dict[str, bool] = {}
    for name, required in KnownSecret.objects.values_list("name", "required"):
        names[name] = required
    for name, required in manager.known.items():
        names[name] = names.get(name, False) or required
    for name in app_settings.SECRETS_REQUIRED:
        names[name] = True
    obsolete = set(obsolete_secret_names(names))
    return dict(sorted((name, required) for name, required in names.items() if name not in obsolete))


DATABASE_PASSWORD_PREFIX = "DATABASE_PASSWORD_"


def obsolete_secret_names(names=None) -> list[str]:
    """Recorded secrets nothing reads any more: DATABASE_PASSWORD_<ALIAS> of an alias no longer configured.

    Settings read one such password per DATABASE_URL_<ALIAS>; once the URL is gone, the password is
    not missing, it is unused. A secret listed in SECRETS_REQUIRED is never obsolete.
    """
    if names is None:
        names = KnownSecret.objects.filter(name__startswith=DATABASE_PASSWORD_PREFIX).values_list("name", flat=True)
    configured = {alias.upper() for alias in connections.settings}
    required = set(app_settings.SECRETS_REQUIRED)
    return [
        name for name in names
        if name.startswith(DATABASE_PASSWORD_PREFIX) and name not in required
        and name.removeprefix(DATABASE_PASSWORD_PREFIX) not in configured
    ]


def provider_description(*, manager: SecretManager | None = None) -> dict[str, object]:
    """The active provider and its non-secret options, for the admin and secrets_check."""
    manager = manager or default_manager
    return {
        "provider": manager.provider.name,
        "options": manager.provider.options(),
        "fallback": manager.fallback.name if manager.fallback is not None else "",
        "cache_ttl_seconds": manager.ttl,
        "max_stale_seconds": manager.max_stale,
        "rotation_broadcast": "redis" if manager.rotation_redis_url else "",
    }


def provider_error_counts() -> dict[tuple[str, str], int]:
    """Reads the secret provider could not answer, from the access log: (provider, outcome) -> count.

    What the manager records when its provider fails: `denied`, `stale` (the last good value
    served), and `fallback`/`missing` carrying the provider's error as detail. A `fallback` or
    `missing` because the provider simply does not hold the secret (detail empty or "not in ...")
    is not an error. Events reach the table when each process flushes its buffer
    (SECRETS_ACCESS_LOG_FLUSH_SECONDS), so the figure lags by up to that long.
    """
    from django.db.models import Q, Sum

    from secrets_app.models import SecretAccess

    Outcome = SecretAccess.Outcome
    degraded = (
        Q(outcome__in=[Outcome.FALLBACK, Outcome.MISSING]) & ~Q(detail="") & ~Q(detail__startswith="not in ")
    )
    rows = (
        SecretAccess.objects.filter(Q(outcome__in=[Outcome.DENIED, Outcome.STALE]) | degraded)
        .values("provider", "outcome").annotate(total=Sum("count")).order_by()
    )
    return {(row["provider"], row["outcome"]): row["total"] for row in rows}


def secret_status_counts() -> dict[tuple[str, bool], int]:
    """Known secrets by how they last resolved in any process: (status, required) -> count."""
    from django.db.models import Count

    rows = KnownSecret.objects.values("status", "required").annotate(count=Count("id")).order_by()
    return {(row["status"], row["required"]): row["count"] for row in rows}
