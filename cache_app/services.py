"""Services of cache_app: health report, Redis statistics, clearing the application's cache keys."""
from __future__ import annotations

import logging
import time
import threading
from dataclasses import dataclass
from typing import Any

from cache_app.health import CheckResult, HealthCheck, HealthCheckFailed, health_checks, log_throttle

logger = logging.getLogger("cache_app.health")


@dataclass
class HealthReport:
    """The outcome of every check; `ok` is False when a required component failed."""

    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results if result.required)

    def as_dict(self) -> dict[str, Any]:
        """The /health JSON: status, one boolean per component, then details."""
        body: dict[str, Any] = {"status": "ok" if self.ok else "fail"}
        details: dict[str, Any] = {}
        for result in self.results:
            body[result.component] = result.ok
            entry: dict[str, Any] = {"required": result.required}
            if result.latency_ms is not None:
                entry["latency_ms"] = result.latency_ms
            if result.error:
                entry["error"] = result.error
            entry.update(result.details)
            details[result.component] = entry
        body["details"] = details
        return body


def _run_one(check: HealthCheck) -> CheckResult:
    required = check.is_required()
    if not check.is_configured():
        return CheckResult(check.component, ok=False, required=required, details=check.not_configured_details())
    started = time.perf_counter()
    try:
        details = check.check_status() or {}
    except Exception as error:  # any failure of a component is a result, never a 500
        latency = round((time.perf_counter() - started) * 1000, 1)
        if log_throttle.should_log(check.component):
            logger.warning("health check %s failed: %s: %s", check.component, type(error).__name__, error)
        # Only the class name (or our own message) is published: driver messages name hosts and users.
        message = str(error) if isinstance(error, HealthCheckFailed) else type(error).__name__
        return CheckResult(
            check.component, ok=False, required=required, latency_ms=latency, error=message,
            details=check.failure_details(),
        )
    latency = round((time.perf_counter() - started) * 1000, 1)
    return CheckResult(check.component, ok=True, required=required, latency_ms=latency, details=details)


def health_check_run(*, timeout_seconds: float, checks: list[HealthCheck] | None = None) -> HealthReport:
    """Run every health check in parallel; a check still running at the deadline counts as failed.

    Each check runs in a daemon thread that is abandoned (not joined) at the deadline, so the caller
    answers on time even when a component hangs, and a hung check cannot delay the process' exit.
    """
    checks = health_checks() if checks is None else checks
    results: dict[int, CheckResult] = {}
    threads = []
    for index, check in enumerate(checks):
        thread = threading.Thread(
            target=lambda index=index, check=check: results.__setitem__(index, _run_one(check)),
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
            result = CheckResult(
                check.component, ok=False, required=check.is_required(),
                latency_ms=round(timeout_seconds * 1000, 1), error="timeout", details=check.failure_details(),
            )
        report.append(result)
    return HealthReport(results=report)
