"""Rotation broadcast through Redis: every process drops a rotated secret within seconds.

``rotate_secret`` writes a rotation id into the hash ``<prefix>:rotations`` and publishes the
secret's name on the channel ``<prefix>:rotated``. Each process runs one daemon thread that
listens on the channel (instant) and also compares the hash every second, so a message missed
while Redis or the connection was down is still acted on. The hot path never talks to Redis: the
thread only marks cache entries as expired.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING

# Imported here, in the thread that starts the listener: importing redis inside the listener
# thread races with the main thread importing it (django_redis) and fails on a half-built module.
import redis

if TYPE_CHECKING:
    from secrets_app.manager import SecretManager

logger = logging.getLogger("secrets_app")


def _keys(prefix: str) -> tuple[str, str]:
    return f"{prefix}:rotations", f"{prefix}:rotated"


def _client(redis_url: str):
    """A client for REDIS_URL in any form cache_app accepts, Sentinel included."""
    timeouts = {"socket_connect_timeout": 2, "socket_timeout": 5}
    if not redis_url.lower().startswith("sentinel://"):
        return redis.Redis.from_url(redis_url, **timeouts)
    from redis.sentinel import Sentinel

    from cache_app.configuration import redis_cache_location

    # One parser for the URL format, shared with the cache: redis://[:password@]service/db + SENTINELS.
    location, options = redis_cache_location(redis_url)
    credentials, _, service_and_database = location.split("://", 1)[1].rpartition("@")
    service, _, database = service_and_database.partition("/")
    password = credentials.partition(":")[2] or None
    if password:
        from urllib.parse import unquote

        password = unquote(password)
    sentinel = Sentinel(options["SENTINELS"], sentinel_kwargs=options.get("SENTINEL_KWARGS") or {}, **timeouts)
    return sentinel.master_for(service, db=int(database or 0), password=password, **timeouts)


def rotation_publish(*, redis_url: str, prefix: str, name: str) -> None:
    """Announce that ``name`` changed. Raises redis errors to the caller (the rotation service)."""
    hash_key, channel = _keys(prefix)
    client = _client(redis_url)
    try:
        client.hset(hash_key, name, f"{time.time():.6f}-{uuid.uuid4().hex}")
        client.publish(channel, name)
    finally:
        client.close()


class RotationListener(threading.Thread):
    """Daemon thread invalidating rotated secrets in one manager."""

    poll_seconds = 1.0

    def __init__(self, *, manager: SecretManager, redis_url: str, prefix: str) -> None:
        super().__init__(name="secrets-rotation-listener", daemon=True)
        self.manager = manager
        self.redis_url = redis_url
        self.prefix = prefix
        self._stopped = threading.Event()
        self._seen: dict[bytes, bytes] | None = None
        #: Set once the first subscription is in place (tests and the benchmark wait for it).
        self.ready = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def _compare(self, current: dict[bytes, bytes]) -> None:
        seen = self._seen
        if seen is not None:
            for name, rotation in current.items():
                if seen.get(name) != rotation:
                    self.manager.invalidate(name.decode("utf-8", "replace"))
        self._seen = current

    def run(self) -> None:
        hash_key, channel = _keys(self.prefix)
        failures = 0
        while not self._stopped.is_set():
            client = pubsub = None
            try:
                client = _client(self.redis_url)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                self._compare(client.hgetall(hash_key))
                if failures:
                    logger.info("Secret rotation listener reconnected to Redis.")
                failures = 0
                self.ready.set()
                next_poll = time.monotonic() + self.poll_seconds
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=self.poll_seconds)
                    if message and message.get("type") == "message":
                        self.manager.invalidate(message["data"].decode("utf-8", "replace"))
                    if time.monotonic() >= next_poll:
                        self._compare(client.hgetall(hash_key))
                        next_poll = time.monotonic() + self.poll_seconds
            except Exception as error:  # noqa: BLE001 - the thread must survive any Redis failure
                failures += 1
                if failures == 1:
                    logger.warning("Secret rotation listener lost Redis (%s); secrets expire by TTL meanwhile.",
                                   type(error).__name__)
                self._stopped.wait(min(30.0, 2.0 ** failures))
            finally:
                for resource in (pubsub, client):
                    if resource is not None:
                        try:
                            resource.close()
                        except Exception:  # noqa: BLE001
                            pass
