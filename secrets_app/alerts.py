"""E-mails to ADMINS when a secret provider denies access."""
from __future__ import annotations

import collections
import logging
import threading
import time

from secrets_app.access_log import process_actor

logger = logging.getLogger("secrets_app")


class DeniedAccessAlerts:
    """At most one e-mail per secret per ``interval`` seconds, held until settings are loaded.

    A denied credential is retried with back-off, and every retry must not become a mail; and
    settings read secrets before mail can be sent, so alerts raised then wait in memory.
    """

    def __init__(self, interval: float = 3600.0) -> None:
        self.interval = interval
        self._pending: collections.deque[tuple[str, str, str]] = collections.deque(maxlen=100)
        self._last_sent: dict[str, float] = {}
        self._lock = threading.Lock()

    def reset_lock(self) -> None:
        """After a fork: the lock may have been held by a parent thread that is gone."""
        self._lock = threading.Lock()

    def raise_alert(self, *, provider: str, name: str, message: str) -> None:
        logger.error("ALERT: secret provider %s denied access to %s: %s", provider, name, message)
        with self._lock:
            now = time.monotonic()
            if now - self._last_sent.get(name, -self.interval) < self.interval:
                return
            self._last_sent[name] = now
            self._pending.append((provider, name, message))
        self.send()

    def send(self) -> None:
        """E-mail pending alerts once settings are loaded (held until then)."""
        from django.conf import settings

        if not settings.configured or not self._pending:
            return
        from django.core.mail import mail_admins

        while self._pending:
            try:
                provider, name, message = self._pending.popleft()
            except IndexError:
                return
            mail_admins(
                subject=f"Secret provider denied access to {name}",
                message=(f"The secret provider {provider!r} refused to give {name} to "
                         f"{process_actor()}:\n\n{message}\n\nThe last good value (if any) is served "
                         "until SECRETS_MAX_STALE; check the credentials and policy of this install."),
                fail_silently=True,
            )
