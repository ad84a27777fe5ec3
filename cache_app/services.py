"""Services of cache_app: health report, Redis statistics, clearing the application's cache keys."""
from __future__ import annotations

import logging
import time
import threading
from dataclasses import dataclass
from typing import Any

# The audit log's public entry point (works with or without backups_app installed).
from backups_app.audit import audit_log
from cache_app.health import (
    CheckResult,
    HealthCheck,
    HealthCheckFailed,
    HealthConfigurationError,
    health_checks,
    log_throttle,
)

logger = logging.getLogger("cache_app.health")


@dataclass
class HealthReport:
    """The outcome of every check; `ok` is False when a required component failed."""

    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results if result.required)

    def as_dict(self, *, details: bool = True) -> dict[str, Any]:
        """The /health JSON: status, one boolean per component, then (if `details`) the details."""
        body: dict[str, Any] = {"status": "ok" if self.ok else "fail"}
        for result in self.results:
            body[result.component] = result.ok
        if not details:
            return body
        body["details"] = self.details()
        return body

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        for result in self.results:
            entry: dict[str, Any] = {"required": result.required}
            if result.latency_ms is not None:
                entry["latency_ms"] = result.latency_ms
            if result.error:
                entry["error"] = result.error
            entry.update(result.details)
            details[result.component] = entry
        return details


def _failure_details(check: HealthCheck) -> dict[str, Any]:
    try:
        return check.failure_details()
    except Exception:  # noqa: BLE001 - e.g. details read from opsdesk's database while it is down
        return {}


def _failed(check: HealthCheck, error: Exception, *, required: bool, latency_ms: float | None) -> CheckResult:
    if log_throttle.should_log(check.component):
        logger.warning("health check %s failed: %s: %s", check.component, type(error).__name__, error)
    # Only the class name (or our own message) is published: driver messages name hosts and users.
    message = str(error) if isinstance(error, HealthCheckFailed) else type(error).__name__
    return CheckResult(
        check.component, ok=False, required=required, latency_ms=latency_ms, error=message,
        details=_failure_details(check),
    )


def _run_one(check: HealthCheck, *, requirements: dict[int, bool] | None = None, index: int = 0) -> CheckResult:
    """One check's result, never an exception: a check that fails in any of its methods failed.

    is_required() and is_configured() may read state too (the worker check reads the queue, the
    binlog check the archived databases): when opsdesk's own database is down they raise like
    check_status(), and /health must still answer 503 with its JSON, not a 500 page. A check that
    cannot even tell whether it is required counts as required. `requirements[index]` receives
    what is_required() answered, for the caller to use if this check misses the deadline.
    """
    required = True
    try:
        required = check.is_required()
        if requirements is not None:
            requirements[index] = required
        if not check.is_configured():
            return CheckResult(check.component, ok=False, required=required, details=check.not_configured_details())
    except Exception as error:  # noqa: BLE001 - any failure of a component is a result, never a 500
        return _failed(check, error, required=required, latency_ms=None)
    started = time.perf_counter()
    try:
        details = check.check_status() or {}
    except Exception as error:  # noqa: BLE001 - any failure of a component is a result, never a 500
        return _failed(check, error, required=required, latency_ms=round((time.perf_counter() - started) * 1000, 1))
    latency = round((time.perf_counter() - started) * 1000, 1)
    return CheckResult(check.component, ok=True, required=required, latency_ms=latency, details=details)


def health_configuration_failure(error: HealthConfigurationError) -> CheckResult:
    """The result that keeps /health at 503 while HEALTH_CHECKS or HEALTH_AUTHENTICATORS is broken.

    Without its checks /health knows nothing, so it must not say "ok"; the message names the
    setting and the dotted path, never a secret.
    """
    if log_throttle.should_log("configuration"):
        logger.error("/health is misconfigured: %s", error)
    return CheckResult("configuration", ok=False, required=True, error=str(error))


def health_check_run(*, timeout_seconds: float, checks: list[HealthCheck] | None = None) -> HealthReport:
    """Run every health check in parallel; a check still running at the deadline counts as failed.

    Each check runs in a daemon thread that is abandoned (not joined) at the deadline, so the caller
    answers on time even when a component hangs, and a hung check cannot delay the process' exit.
    """
    if checks is None:
        try:
            checks = health_checks()
        except HealthConfigurationError as error:
            return HealthReport(results=[health_configuration_failure(error)])
    results: dict[int, CheckResult] = {}
    requirements: dict[int, bool] = {}
    threads = []
    for index, check in enumerate(checks):
        thread = threading.Thread(
            target=lambda index=index, check=check: results.__setitem__(
                index, _run_one(check, requirements=requirements, index=index)),
            name=f"opsdesk-health-{check.component}", daemon=True,
        )
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout_seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    report = []
    for index, check in enumerate(checks):
        result = results.get(index)
        if result is None:
            if log_throttle.should_log(check.component):
                logger.warning("health check %s did not answer within %.2fs", check.component, timeout_seconds)
            # What the check's own thread found out; asking is_required() again here could hang on
            # the very component that made the check miss its deadline. Unknown counts as required.
            result = CheckResult(
                check.component, ok=False, required=requirements.get(index, True),
                latency_ms=round(timeout_seconds * 1000, 1), error="timeout", details=_failure_details(check),
            )
        report.append(result)
    return HealthReport(results=report)


# --- Redis statistics and clearing the application's keys ------------------------------------------

SESSION_KEY_MARKER = b"django.contrib.sessions.cached_db"


@dataclass
class RedisStats:
    """What the admin's Redis page shows; built from INFO and one bounded SCAN of the app's prefix."""

    location: str
    version: str
    uptime_seconds: int
    used_memory_human: str
    used_memory_peak_human: str
    maxmemory_human: str
    hits: int
    misses: int
    evicted_keys: int
    connected_clients: int
    ops_per_second: int
    keys_per_database: dict[str, dict[str, int]]
    key_prefix: str
    app_keys: int
    app_sessions: int
    scan_complete: bool
    scan_limit: int

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None


def _resilient_cache():
    from django.core.cache import caches

    from cache_app.conf import app_settings
    from cache_app.exceptions import RedisNotConfigured

    cache = caches["default"]
    if not app_settings.REDIS_URL or not hasattr(cache, "redis_client"):
        raise RedisNotConfigured("REDIS_URL is not set: the cache is in process memory")
    return cache


def redis_stats_collect(*, scan_limit: int = 100_000) -> RedisStats:
    """Read the server's INFO and count the app's keys and cached sessions (at most `scan_limit`).

    Raises RedisNotConfigured without REDIS_URL and CacheUnavailable when Redis does not answer.
    """
    from cache_app.backends.redis import OUTAGE_ERRORS
    from cache_app.exceptions import CacheUnavailable

    cache = _resilient_cache()
    try:
        client = cache.redis_client(write=False)
        info = client.info()
        app_keys = app_sessions = 0
        complete = True
        for key in client.scan_iter(match=cache.prefix_pattern(), count=1000):
            app_keys += 1
            if SESSION_KEY_MARKER in key:
                app_sessions += 1
            if app_keys >= scan_limit:
                complete = False
                break
    except OUTAGE_ERRORS as error:
        cache.breaker.record_failure(error)
        raise CacheUnavailable(cache.location) from None
    cache.breaker.record_success()
    keyspace = {
        name: {"keys": int(value.get("keys", 0)), "expires": int(value.get("expires", 0))}
        for name, value in info.items()
        if name.startswith("db") and name[2:].isdigit() and isinstance(value, dict)
    }
    return RedisStats(
        location=cache.location,
        version=str(info.get("redis_version", "")),
        uptime_seconds=int(info.get("uptime_in_seconds", 0)),
        used_memory_human=str(info.get("used_memory_human", "")),
        used_memory_peak_human=str(info.get("used_memory_peak_human", "")),
        maxmemory_human=str(info.get("maxmemory_human", "")),
        hits=int(info.get("keyspace_hits", 0)),
        misses=int(info.get("keyspace_misses", 0)),
        evicted_keys=int(info.get("evicted_keys", 0)),
        connected_clients=int(info.get("connected_clients", 0)),
        ops_per_second=int(info.get("instantaneous_ops_per_sec", 0)),
        keys_per_database=keyspace,
        key_prefix=cache.key_prefix,
        app_keys=app_keys,
        app_sessions=app_sessions,
        scan_complete=complete,
        scan_limit=scan_limit,
    )


def cache_clear(*, user=None, request=None, source: str = "admin") -> int:
    """Delete every key under the app's KEY_PREFIX (SCAN + UNLINK in batches, never FLUSHDB).

    Cached sessions go too; cached_db sessions reload from the database, nobody is logged out.
    Audited as `cache_clear` whatever the outcome. Returns the number of keys removed; raises
    RedisNotConfigured without REDIS_URL, CacheUnavailable when Redis does not answer.
    """
    from cache_app.exceptions import CacheUnavailable

    cache = _resilient_cache()
    try:
        removed = cache.clear_prefix()
    except CacheUnavailable:
        audit_log(
            action="cache_clear", source=source, outcome="failure", user=user, request=request,
            target=cache.key_prefix, detail="Redis did not answer",
        )
        raise
    audit_log(
        action="cache_clear", source=source, outcome="success", user=user, request=request,
        target=cache.key_prefix, detail=f"{removed} keys removed",
    )
    return removed
