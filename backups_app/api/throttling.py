"""Per-token rate limit for the REST API, counted by the cache area's shared limiter."""
from __future__ import annotations

from rest_framework.throttling import BaseThrottle

from backups_app.conf import app_settings
from backups_app.models import ApiToken
from cache_app.ratelimit import rate_limit_check


class ApiTokenRateThrottle(BaseThrottle):
    """BACKUP_API_RATE_LIMIT calls per BACKUP_API_RATE_LIMIT_PERIOD seconds for each token.

    Counting happens in `cache_app.ratelimit.rate_limit_check` (Redis when REDIS_URL, so the limit
    holds across every web process). DRF turns a refusal into 429 with Retry-After from `wait()`.
    """

    scope = "api-token"

    def __init__(self) -> None:
        self.retry_after: int | None = None

    def allow_request(self, request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            # Unauthenticated calls are refused before throttling; nothing to count them against.
            return True
        self.retry_after = rate_limit_check(
            scope=self.scope,
            key=str(token.pk),  # the token's id, never the token
            limit=app_settings.BACKUP_API_RATE_LIMIT,
            period_seconds=app_settings.BACKUP_API_RATE_LIMIT_PERIOD,
        )
        return self.retry_after is None

    def wait(self) -> int | None:
        return self.retry_after
