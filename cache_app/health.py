"""Health checks behind /health, one class per component (the plugin design of django-health-check).

Each app contributes its checks: a list of dotted paths in its AppConfig's `health_checks`
attribute (this app: the database and Redis; backups_app.health: storage, broker, worker,
scheduler, dirty databases, binlog archiver). settings.HEALTH_CHECKS, when set, replaces the list.
The same for who may see the details: `health_authenticators` / settings.HEALTH_AUTHENTICATORS.
cache_app imports no other app: `HealthCheck` and `bearer_token` here are the API the checks of
other apps build on.

django-health-check itself was not used: its JSON is `{"<Check name>": "working"}` (a string per
plugin), while opsdesk's contract is one boolean per component at the top level, details beside it,
503 only for *required* components, and a shared deadline for all checks. Its design is kept: a
documented base class, one subclass per backend, a registry, `check_status()` raising on failure.
"""
from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

from django.apps import apps
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.http import HttpRequest
from django.utils.module_loading import import_string

from cache_app.conf import app_settings

logger = logging.getLogger("cache_app.health")


class HealthCheckFailed(Exception):
    """A component answered wrongly or not at all. The message is shown: keep it free of secrets."""


@dataclass
class CheckResult:
    """What one check found: whether it works, how long it took, safe-to-publish details."""

    component: str
    ok: bool
    required: bool
    latency_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class HealthCheck:
    """One component of /health.

    Subclasses set `component` (the top-level key) and implement `check_status()`, which returns a
    dict of details to publish or raises HealthCheckFailed (any other exception counts as a failure
    too; only its class name is published, the message goes to the log). `is_configured()` says
    whether the deployment uses the component at all, `is_required()` whether its failure makes the
    whole service unhealthy (HTTP 503). Checks run in worker threads with a shared deadline, so they
    must not rely on thread-local state set up by the request.
    """

    component: ClassVar[str]

    def is_configured(self) -> bool:
        return True

    def is_required(self) -> bool:
        return self.is_configured()

    def check_status(self) -> dict[str, Any]:
        raise NotImplementedError

    def not_configured_details(self) -> dict[str, Any]:
        return {"configured": False}

    def failure_details(self) -> dict[str, Any]:
        """Details still worth publishing when the check failed."""
        return {}


class DatabaseCheck(HealthCheck):
    """opsdesk's own database answers `SELECT 1`."""

    component = "database"

    def check_status(self) -> dict[str, Any]:
        connection = connections["default"]
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                if cursor.fetchone() != (1,):
                    raise HealthCheckFailed("unexpected answer to SELECT 1")
            return self.details()
        finally:
            # The check runs in a pool thread: its connection must not outlive the thread.
            connection.close()

    def details(self) -> dict[str, Any]:
        """What to publish once the database answered (a subclass adds its own figures)."""
        return {}


class RedisCheck(HealthCheck):
    """The Redis behind the default cache answers PING (bypassing the circuit breaker)."""

    component = "redis"

    def is_configured(self) -> bool:
        return bool(app_settings.REDIS_URL)

    def check_status(self) -> dict[str, Any]:
        from cache_app.ratelimit import rate_limit_backend

        cache = caches["default"]
        if not hasattr(cache, "redis_client"):
            raise HealthCheckFailed("the default cache is not Redis")
        try:
            cache.redis_client(write=True).ping()
        except Exception as error:
            # /health doubles as the probe that notices an outage or a recovery quickly.
            cache.breaker.record_failure(error)
            raise
        cache.breaker.record_success()
        return {"rate_limit": rate_limit_backend()}

    def failure_details(self) -> dict[str, Any]:
        from cache_app.ratelimit import rate_limit_backend

        return {"rate_limit": rate_limit_backend()}

    def not_configured_details(self) -> dict[str, Any]:
        from cache_app.ratelimit import rate_limit_backend

        return {"configured": False, "cache": "per-process", "rate_limit": rate_limit_backend()}


# The app whose checks come first in /health, before every other app's (in INSTALLED_APPS order).
_OWN_LABEL = "cache_app"


class HealthConfigurationError(ImproperlyConfigured):
    """HEALTH_CHECKS or HEALTH_AUTHENTICATORS names something that is not a check or an authenticator.

    /health answers 503 with `"configuration": false` while it lasts (cache_app.services), and
    `manage.py check` reports it (cache_app.checks): a /health that cannot run its checks is never green.
    """


def _contributions(attribute: str) -> list[str]:
    configs = sorted(apps.get_app_configs(), key=lambda config: config.label != _OWN_LABEL)
    return [path for config in configs for path in getattr(config, attribute, ())]


def _import(setting: str, path: str) -> Any:
    try:
        return import_string(path)
    except Exception as error:  # noqa: BLE001 - a broken module is a configuration error like a missing one
        raise HealthConfigurationError(f"{setting}: {path!r} cannot be imported ({type(error).__name__}).") from error


def health_check_class(path: str) -> type[HealthCheck]:
    """The HealthCheck subclass at `path`; HealthConfigurationError when it is not one."""
    check_class = _import("HEALTH_CHECKS", path)
    if not (isinstance(check_class, type) and issubclass(check_class, HealthCheck)
            and isinstance(getattr(check_class, "component", None), str)):
        raise HealthConfigurationError(
            f"HEALTH_CHECKS: {path!r} is not a cache_app.health.HealthCheck subclass with a component."
        )
    return check_class


def health_authenticator(path: str) -> Callable[[HttpRequest], bool]:
    """The function `(request) -> bool` at `path`; HealthConfigurationError when it is not one."""
    authenticator = _import("HEALTH_AUTHENTICATORS", path)
    # A class would be "called" with the request and answer a truthy instance: details for everyone.
    if isinstance(authenticator, type) or not callable(authenticator):
        raise HealthConfigurationError(f"HEALTH_AUTHENTICATORS: {path!r} is not a function (request) -> bool.")
    return authenticator


def _configured_paths(setting: str) -> list[str] | None:
    """settings.<setting> as a list of dotted paths, None when unset; HealthConfigurationError when malformed."""
    paths = getattr(app_settings, setting)
    if paths is None:
        return None
    # An empty list of checks would make /health answer "ok" whatever is down.
    if not isinstance(paths, (list, tuple)) or not paths or not all(isinstance(path, str) for path in paths):
        raise HealthConfigurationError(f"{setting} must be None or a non-empty list of dotted paths.")
    return list(paths)


@lru_cache(maxsize=8)
def _check_classes(paths: tuple[str, ...]) -> tuple[type[HealthCheck], ...]:
    classes: dict[str, type[HealthCheck]] = {}
    for path in paths:
        check_class = health_check_class(path)
        if check_class.component in classes:
            # Two results under one key of the JSON: the second would hide the first's failure.
            raise HealthConfigurationError(f"HEALTH_CHECKS: two checks report {check_class.component!r}.")
        classes[check_class.component] = check_class
    return tuple(classes.values())


@lru_cache(maxsize=8)
def _authenticators(paths: tuple[str, ...]) -> tuple[Callable[[HttpRequest], bool], ...]:
    return tuple(health_authenticator(path) for path in paths)


def default_health_check_paths() -> list[str]:
    """The checks of the installed apps: cache_app's first, then each app's `health_checks`.

    A check whose component is already listed takes that entry's place, so an app can extend
    another app's check: backups_app's "database" check adds the age of the last good backups
    to cache_app's SELECT 1.
    """
    by_component: dict[str, str] = {}
    for path in _contributions("health_checks"):
        by_component[health_check_class(path).component] = path
    return list(by_component.values())


def health_checks() -> list[HealthCheck]:
    """The registry: one fresh instance of every check in HEALTH_CHECKS, in the order reported.

    settings.HEALTH_CHECKS (dotted paths of HealthCheck subclasses) unset or None: the installed
    apps' defaults (default_health_check_paths). HealthConfigurationError when the setting is
    malformed or names something that is not a check.
    """
    paths = _configured_paths("HEALTH_CHECKS")
    if paths is None:
        paths = default_health_check_paths()
    checks = []
    for check_class in _check_classes(tuple(paths)):
        try:
            checks.append(check_class())
        except Exception as error:  # noqa: BLE001 - e.g. a check whose constructor needs arguments
            raise HealthConfigurationError(
                f"HEALTH_CHECKS: {check_class.__qualname__} cannot be created ({type(error).__name__})."
            ) from error
    return checks


# --- Who sees the details -------------------------------------------------------------------------

def bearer_token(request: HttpRequest) -> str:
    """The value of `Authorization: Bearer <value>`, or "" when the request has none."""
    scheme, _space, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def staff_session(request: HttpRequest) -> bool:
    """A logged-in staff user (the admin's session)."""
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)


def health_token(request: HttpRequest) -> bool:
    """The HEALTH_TOKEN secret as a Bearer token (for a monitoring system that has no user)."""
    presented, expected = bearer_token(request), app_settings.HEALTH_TOKEN
    return bool(presented and expected and hmac.compare_digest(presented.encode(), expected.encode()))


def health_authenticators() -> list[Callable[[HttpRequest], bool]]:
    """Functions `(request) -> bool`, any of which lets the caller see /health's details.

    settings.HEALTH_AUTHENTICATORS (dotted paths) unset or None: every installed app's
    `health_authenticators` (cache_app's staff session and HEALTH_TOKEN; backups_app's API tokens).
    HealthConfigurationError when the setting is malformed or names something that is not a function.
    """
    paths = _configured_paths("HEALTH_AUTHENTICATORS")
    if paths is None:
        paths = _contributions("health_authenticators")
    return list(_authenticators(tuple(paths)))


class _LogThrottle:
    """One log line per component per interval: load balancers call /health every few seconds."""

    def __init__(self, interval_seconds: float = 60.0) -> None:
        self.interval_seconds = interval_seconds
        self._last: dict[str, float] = {}

    def should_log(self, component: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(component, float("-inf")) < self.interval_seconds:
            return False
        self._last[component] = now
        return True


log_throttle = _LogThrottle()
