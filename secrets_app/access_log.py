"""The access log of secrets, kept in memory until ``secrets_access_flush`` writes it.

Settings read secrets before the app registry exists, so nothing here imports models: events,
aggregated hit counts and the names whose status changed wait in this buffer. It never holds a
value.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

# Outcomes recorded in the access log (secrets_app.models.SecretAccess.Outcome mirrors them).
FETCHED, HIT, FALLBACK, STALE, DENIED, MISSING, ROTATED = (
    "fetched", "hit", "fallback", "stale", "denied", "missing", "rotated",
)

#: Who is reading: a user name set by the admin or a command; the process otherwise.
_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar("secrets_actor", default=None)


@contextlib.contextmanager
def secrets_actor(actor: str) -> Iterator[None]:
    """Attribute the secret reads inside the block to ``actor`` in the access log."""
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def process_actor() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class AccessEvent:
    """One line of the access log, before it reaches the database. Never holds a value."""

    name: str
    provider: str
    outcome: str
    actor: str
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    count: int = 1
    detail: str = ""


class AccessLog:
    """Buffered events, hit counts per name and the names whose cached status changed.

    ``hits`` is a plain dict on purpose: the cache's hit path increments it without a lock (a lost
    increment under contention costs a count, a lock would cost every read).
    """

    def __init__(self, max_events: int = 10_000) -> None:
        self.events: collections.deque[AccessEvent] = collections.deque(maxlen=max_events)
        self.hits: dict[str, int] = {}
        self.changed: set[str] = set()

    def record(self, name: str, *, provider: str, outcome: str, detail: str = "", actor: str | None = None) -> None:
        self.events.append(AccessEvent(
            name=name, provider=provider, outcome=outcome,
            actor=actor or _actor.get() or process_actor(), detail=detail[:500],
        ))

    def drain(self) -> tuple[list[AccessEvent], dict[str, int], set[str]]:
        """Take the buffered events, the hit counts and the changed names."""
        events = []
        while True:
            try:
                events.append(self.events.popleft())
            except IndexError:
                break
        hits, self.hits = self.hits, {}
        changed, self.changed = self.changed, set()
        return events, hits, changed

    def pending(self) -> bool:
        return bool(self.events or self.hits or self.changed)
