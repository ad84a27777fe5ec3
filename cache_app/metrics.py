"""/metrics for Prometheus: who may scrape it, which collectors answer, and Redis's own gauge.

Each app contributes its collectors (backups_app.metrics, secrets_app.metrics, this module's
RedisCollector), listed by dotted path in settings.METRICS_COLLECTORS, the way /health's checks are
small classes. They compute gauges from the database at scrape time into a registry built for that
scrape: no process-global counters, so gunicorn's many processes (and their restarts) all answer
the same, and prometheus_client's multiprocess mode with its shared directory is not needed.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterator
from functools import lru_cache

from django.http import HttpRequest
from django.utils.module_loading import import_string
from django.views.decorators.debug import sensitive_variables
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from cache_app.conf import app_settings
from secrets_app import get_secret

logger = logging.getLogger("cache_app.metrics")

# A request carrying one of these came through a proxy: its socket address is the proxy's (often
# 127.0.0.1), not the caller's, so the address allow-list must not let it in.
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


class RedisCollector:
    """`opsdesk_redis_up`: whether the Redis behind the cache answers PING (only when configured)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from cache_app.health import RedisCheck

        check = RedisCheck()
        if not check.is_configured():
            return
        try:
            check.check_status()
            up = 1.0
        except Exception as error:  # noqa: BLE001 - any failure means "down"; the class name is logged
            logger.warning("Redis is down for /metrics: %s", type(error).__name__)
            up = 0.0
        yield GaugeMetricFamily("opsdesk_redis_up", "1 when the Redis behind the cache answers PING.", value=up)


@lru_cache(maxsize=1)
def _collector_classes(paths: tuple[str, ...]) -> tuple[type, ...]:
    return tuple(import_string(path) for path in paths)


def metrics_registry() -> CollectorRegistry:
    """A fresh registry holding one instance of every collector in METRICS_COLLECTORS."""
    registry = CollectorRegistry(auto_describe=False)
    for collector_class in _collector_classes(tuple(app_settings.METRICS_COLLECTORS)):
        registry.register(collector_class())
    return registry


def metrics_render(*, accept: str) -> tuple[bytes, str]:
    """The exposition text (Prometheus text or OpenMetrics, as the Accept header asks) and its type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(metrics_registry()), content_type


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in app_settings.METRICS_ALLOWED_IPS]


def address_allowed(address: str) -> bool:
    """Whether `address` is inside METRICS_ALLOWED_IPS (an IPv4-mapped IPv6 address counts as IPv4)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return any(parsed in network for network in _allowed_networks())


@sensitive_variables("expected", "presented")
def metrics_access(*, request: HttpRequest) -> int | None:
    """None when the caller may scrape; else the status to answer (401 asks for the token, 403 when
    no token is configured so none would help).

    A Bearer token equal to the secret METRICS_TOKEN (read through get_secret at each scrape, so a
    rotation is seen within SECRETS_CACHE_TTL) lets in from anywhere. Without an Authorization
    header, a direct connection from an address in METRICS_ALLOWED_IPS is let in. A wrong token is
    refused even from an allowed address: presented credentials must be right.
    """
    expected = get_secret("METRICS_TOKEN", default="")
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, presented = header.partition(" ")
        if expected and scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode("utf-8"), expected.encode("utf-8")
        ):
            return None
        return 401 if expected else 403
    forwarded = any(request.META.get(name) for name in FORWARDING_HEADERS)
    if not forwarded and address_allowed(request.META.get("REMOTE_ADDR", "")):
        return None
    return 401 if expected else 403
