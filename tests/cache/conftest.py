"""Fixtures of the cache tests: the machine's Redis under a unique prefix, and a Redis of our own.

`own_redis` starts `redis-server` on a free loopback port so that a test can kill it and start it
again on the same port (the machine's Redis on 6379 is shared and must never be stopped).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from django.core.cache import caches

from cache_app.backends.circuit import breakers_reset


def redis_caches(url: str, prefix: str, *, breaker_seconds: float = 0.5) -> dict:
    """CACHES as settings.py builds them with REDIS_URL, on `url` with the key prefix `prefix`."""
    return {
        "default": {
            "BACKEND": "cache_app.backends.redis.ResilientRedisCache",
            "LOCATION": url,
            "KEY_PREFIX": prefix,
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 0.3,
                "SOCKET_TIMEOUT": 0.3,
                "COMPRESSOR": "cache_app.backends.redis.LargeValueZlibCompressor",
                "CIRCUIT_BREAKER_SECONDS": breaker_seconds,
                "ERROR_LOG_INTERVAL": 60,
            },
        },
        "ratelimit": {
            "BACKEND": "cache_app.backends.failover.FailoverCache",
            "LOCATION": f"ratelimit-{prefix}",
            "OPTIONS": {"PRIMARY": "default"},
        },
    }


def use_redis(settings, url: str, prefix: str, **kwargs) -> None:
    """Point the project at a Redis: the settings fixture's setting_changed resets `caches`."""
    settings.CACHES = redis_caches(url, prefix, **kwargs)
    settings.REDIS_URL = url
    settings.CACHE_KEY_PREFIX = prefix
    settings.RATELIMIT_USE_CACHE = "ratelimit"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OwnRedis:
    """A throwaway redis-server on 127.0.0.1:<port>, without persistence."""

    def __init__(self, tmp_path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tmp_path = tmp_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.tmp_path),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def own_redis(tmp_path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def machine_redis(settings, redis_url, unique_prefix) -> Iterator[str]:
    """The project on the machine's Redis with a unique prefix; the prefix's keys removed afterwards."""
    use_redis(settings, redis_url, unique_prefix)
    try:
        yield unique_prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{unique_prefix}:*", count=500):
            client.unlink(key)
        client.close()


@pytest.fixture(autouse=True)
def fresh_breakers() -> Iterator[None]:
    breakers_reset()
    yield
    caches.close_all()
    breakers_reset()


@pytest.fixture
def hung_server():
    """A TCP server that accepts connections and never answers: a hung Redis.

    Yields (port, accepted): `accepted` lists the connections made to it so far.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.fixture
def black_hole(hung_server):
    """The port of a hung server."""
    return hung_server[0]
