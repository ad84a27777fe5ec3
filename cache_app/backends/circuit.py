"""A small per-process circuit breaker shared by every thread's cache instance of one Redis server."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("cache_app.redis")


class CircuitBreaker:
    """Remembers that a server failed, so that callers skip it for `reset_seconds`.

    Closed: calls go through. After a failure the breaker opens: `allow()` answers False until
    `reset_seconds` have passed, then lets calls through again (the next call is the probe; its
    success closes the breaker, its failure opens it again). Failures are logged at most once per
    `log_interval_seconds`, with the number suppressed in between, so a down Redis cannot flood the
    logs with one traceback per request. `on_recovery` runs (once) when a call succeeds after an
    outage during which `dropped_writes` were recorded.
    """

    def __init__(
        self,
        *,
        name: str,
        reset_seconds: float,
        log_interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.reset_seconds = reset_seconds
        self.log_interval_seconds = log_interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._failing_since: float | None = None
        self._last_logged = float("-inf")
        self._suppressed = 0
        self._dropped_writes = 0
        self.on_recovery: Callable[[], None] | None = None

    @property
    def is_open(self) -> bool:
        return self._clock() < self._open_until

    @property
    def is_failing(self) -> bool:
        """True from the first failure until the next success (open or probing)."""
        return self._failing_since is not None

    def allow(self) -> bool:
        return not self.is_open

    def record_failure(self, error: BaseException) -> None:
        now = self._clock()
        with self._lock:
            self._open_until = now + self.reset_seconds
            if self._failing_since is None:
                self._failing_since = now
            if now - self._last_logged >= self.log_interval_seconds:
                suppressed, self._suppressed, self._last_logged = self._suppressed, 0, now
            else:
                self._suppressed += 1
                return
        # The error's text never carries the URL's password (redis-py names host:port only).
        logger.warning(
            "%s unavailable (%s: %s); calls skipped for %.1fs at a time%s",
            self.name, type(error).__name__, error, self.reset_seconds,
            f"; {suppressed} similar errors not logged" if suppressed else "",
        )

    def record_dropped_write(self) -> None:
        with self._lock:
            self._dropped_writes += 1

    def record_success(self) -> None:
        if self._failing_since is None:
            return
        with self._lock:
            if self._failing_since is None:
                return
            downtime = self._clock() - self._failing_since
            dropped, self._dropped_writes = self._dropped_writes, 0
            self._failing_since = None
            self._open_until = 0.0
            self._suppressed = 0
            self._last_logged = float("-inf")
        logger.warning("%s reachable again after %.1fs (%d writes dropped meanwhile)", self.name, downtime, dropped)
        if dropped and self.on_recovery is not None:
            self.on_recovery()


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(*, name: str, reset_seconds: float, log_interval_seconds: float) -> CircuitBreaker:
    """The process-wide breaker of `name`: Django builds one cache object per thread, all share it."""
    with _breakers_lock:
        breaker = _breakers.get(name)
        if breaker is None:
            breaker = _breakers[name] = CircuitBreaker(
                name=name, reset_seconds=reset_seconds, log_interval_seconds=log_interval_seconds,
            )
        return breaker


def breakers_reset() -> None:
    """Forget every breaker (tests, and settings changes that replace the cache configuration)."""
    with _breakers_lock:
        _breakers.clear()
