"""Prometheus metrics of the secret provider, read from the access log and known-secret table.

Both tables are written by every process (web, worker, beat, commands), so any process scraped
reports the same figures; the in-memory state of the scraped process alone would miss the others.
"""
from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from secrets_app.selectors import provider_error_counts, secret_status_counts


class SecretsCollector:
    """Secret provider errors (a counter over the access log) and secrets by last resolution."""

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "opsdesk_secret_provider_errors",
            "Secret reads the provider could not answer (denied, stale value served, fallback or "
            "nothing served because of a provider error), from the access log.",
            labels=["provider", "outcome"],
        )
        for (provider, outcome), total in sorted(provider_error_counts().items()):
            errors.add_metric([provider, outcome], total)
        yield errors
        secrets = GaugeMetricFamily(
            "opsdesk_secrets",
            "Known secrets by how they last resolved (fetched, fallback, stale, denied, missing).",
            labels=["status", "required"],
        )
        for (status, required), count in sorted(secret_status_counts().items()):
            secrets.add_metric([status or "unknown", "true" if required else "false"], count)
        yield secrets
