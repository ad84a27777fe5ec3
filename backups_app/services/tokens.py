"""API tokens: issued once, stored only as a SHA-256 hash, checked by looking the hash up.

A token is `ops_` followed by `secrets.token_urlsafe(32)` (256 random bits). Because it is that
random, a plain fast SHA-256 is the right hash: a slow password hash (PBKDF2, Argon2) exists to make
guessing *low-entropy* secrets expensive, and nobody can enumerate 2**256 candidates, so it would
only add latency to every API call. The database holds the hash and a short display prefix, so a
leaked copy of it contains no usable token (docs/FAULTS.md: leaked-database).

The check is the indexed lookup of the presented token's hash; the comparison an attacker could time
is between hashes of their own guesses, which tells them nothing about any real token, so no
character-by-character comparison of secrets ever happens.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from backups_app.access import token_issue_check
from backups_app.exceptions import AccessRefused, ApiTokenRejected
from backups_app.models import ApiToken, AuditEntry
from backups_app.services.audit import audit_log

TOKEN_PREFIX = "ops_"
# "ops_" and the first 8 random characters: enough to tell tokens apart in the admin and the audit
# log, far too little (48 bits) to be useful to anyone who reads them.
DISPLAY_PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
# last_used_at is written at most once a minute per token, so a busy script does not turn every
# read-only call into a database write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedToken:
    """A freshly created token and its raw value, which exists only in memory and is shown once."""

    token: ApiToken
    raw_token: str = field(repr=False)


def token_hash(raw_token: str) -> str:
    """The SHA-256 hex digest stored in `ApiToken.token_hash` (see the module docstring for why)."""
    return hashlib.sha256(raw_token.encode("utf-8")).hexdigest()


def api_token_create(
    *,
    user,
    source: str,
    name: str = "",
    expires_in_days: int | None = None,
    expires_at: datetime | None = None,
    created_by=None,
    actor: str = "",
    request: HttpRequest | None = None,
) -> IssuedToken:
    """Issue a new token for `user` and audit it; the raw token is returned once and never stored.

    Give either `expires_in_days` (at least 1) or `expires_at`, or neither for a token that does not
    expire. Raises ValueError for an expiry that is not in the future. `created_by` (an opsdesk user)
    or `actor` (e.g. "cli:deploy", the OS account) names who issued it in the audit log.

    Raises AccessRefused (audited) when `created_by` is not a superuser and `user` is someone else:
    nobody mints credentials for another account unless they are a superuser.
    """
    if created_by is not None:
        try:
            token_issue_check(owner=user, issued_by=created_by)
        except AccessRefused as error:
            audit_log(action="token_create", source=source, outcome=AuditEntry.Outcome.REFUSED, user=created_by,
                      actor=actor, target=user.get_username(), request=request, detail=str(error))
            raise
    if expires_in_days is not None:
        if expires_at is not None:
            raise ValueError("Give expires_in_days or expires_at, not both.")
        if expires_in_days < 1:
            raise ValueError("expires_in_days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_in_days)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("The expiry must be in the future.")

    raw_token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=raw_token[:DISPLAY_PREFIX_LENGTH],
        token_hash=token_hash(raw_token),
        expires_at=expires_at,
    )
    expiry = f"expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "no expiry"
    audit_log(
        action="token_create",
        source=source,
        outcome=AuditEntry.Outcome.SUCCESS,
        user=created_by,
        actor=actor,
        target=token.prefix,
        request=request,
        detail=f"token {token.prefix} for {user.get_username()} ({expiry})",
    )
    return IssuedToken(token=token, raw_token=raw_token)


def api_token_authenticate(*, raw_token: str) -> ApiToken:
    """The active token whose hash matches `raw_token`, with its user loaded.

    Raises ApiTokenRejected when the token is unknown, revoked, expired, or its user is inactive.
    Updates `last_used_at` at most once per LAST_USED_RESOLUTION.
    """
    try:
        token = ApiToken.objects.select_related("user").get(token_hash=token_hash(raw_token))
    except ApiToken.DoesNotExist:
        raise ApiTokenRejected("unknown token") from None

    now = timezone.now()
    if token.revoked_at is not None:
        raise ApiTokenRejected("revoked token", prefix=token.prefix)
    if token.expires_at is not None and token.expires_at <= now:
        raise ApiTokenRejected("expired token", prefix=token.prefix)
    if not token.user.is_active:
        raise ApiTokenRejected("token of an inactive user", prefix=token.prefix)

    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional update: of concurrent requests in the same minute only one writes.
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        token.last_used_at = now
    return token


def api_token_revoke(
    *, token: ApiToken, source: str, user=None, request: HttpRequest | None = None
) -> bool:
    """Revoke `token` from now on and audit it. Returns False if it was already revoked."""
    revoked = bool(
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    )
    token.refresh_from_db(fields=["revoked_at"])
    if revoked:
        audit_log(
            action="token_revoke",
            source=source,
            outcome=AuditEntry.Outcome.SUCCESS,
            user=user,
            target=token.prefix,
            request=request,
            detail=f"token {token.prefix} of {token.user.get_username()}",
        )
    return revoked
