"""System checks of the cache, /health and /metrics settings (`manage.py check`), registered in
CacheConfig.ready().

A bad value (a Redis URL of another scheme, a timeout that is not a number, an entry of
METRICS_ALLOWED_IPS that is not an address) is one line naming the setting, instead of a traceback
at the first request. Messages never echo a value: a Redis URL may carry a password.
"""
from __future__ import annotations

import ipaddress
import sys
from importlib.util import find_spec

from django.core.checks import Error
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from cache_app.conf import OPSDESK_METRICS_COLLECTORS, app_settings
from cache_app.configuration import redis_cache_location

#: Numbers of seconds that must be above zero.
POSITIVE_SECONDS = (
    "CACHE_SOCKET_CONNECT_TIMEOUT", "CACHE_SOCKET_TIMEOUT", "CACHE_CIRCUIT_BREAKER_SECONDS",
    "CACHE_ERROR_LOG_INTERVAL", "HEALTH_CHECK_TIMEOUT",
)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_list_of_strings(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(entry, str) for entry in value)


def _importable(path: str) -> bool:
    """Whether `path` (module.attribute) can be imported, without importing opsdesk's own collectors.

    Checks run before every management command (a cron's backup_now, each background job): importing
    the collectors' modules, and prometheus_client with them, would cost every one of them ~0.1 s.
    opsdesk's own collectors (cache_app.conf.OPSDESK_METRICS_COLLECTORS) are only looked up while
    their module is not loaded; any other path is imported, so that a class missing from a module
    is a check error rather than a /metrics that answers 500.
    """
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        return False
    module = sys.modules.get(module_name)
    if module is not None:
        return hasattr(module, attribute)
    if path not in OPSDESK_METRICS_COLLECTORS:
        try:
            import_string(path)
        except Exception:  # noqa: BLE001 - a module that fails to import cannot be collected either
            return False
        return True
    try:
        return find_spec(module_name) is not None
    except (ImportError, ValueError):  # a parent package that does not exist
        return False


def check_redis(app_configs=None, **kwargs) -> list[Error]:
    """REDIS_URL parses (redis://, rediss://, unix://, sentinel://) and keys get a prefix."""
    redis_url = app_settings.REDIS_URL
    if not redis_url:
        return []
    if not isinstance(redis_url, str):
        return [Error("REDIS_URL must be a string.", hint="e.g. redis://localhost:6379/0", id="cache_app.E001")]
    errors: list[Error] = []
    try:
        redis_cache_location(redis_url)
    except ImproperlyConfigured as error:  # its message describes the form, never the value
        errors.append(Error(str(error), hint="e.g. redis://localhost:6379/0, or leave REDIS_URL empty for "
                                             "the in-memory cache.", id="cache_app.E001"))
    prefix = app_settings.CACHE_KEY_PREFIX
    if not isinstance(prefix, str) or not prefix:
        errors.append(Error(
            "CACHE_KEY_PREFIX must not be empty when REDIS_URL is set.",
            hint="Every key opsdesk writes starts with it, so that clearing its cache never touches other "
                 "applications' keys; e.g. CACHE_KEY_PREFIX=opsdesk.",
            id="cache_app.E002",
        ))
    return errors


def check_setting_types(app_configs=None, **kwargs) -> list[Error]:
    """Timeouts are positive numbers; the /health token and the /metrics lists have their types."""
    errors: list[Error] = []
    for name in POSITIVE_SECONDS:
        value = getattr(app_settings, name)
        if not _is_number(value):
            errors.append(Error(f"{name} must be a number of seconds.",
                                hint=f"Correct {name} in the settings (or the environment).", id="cache_app.E003"))
        elif value <= 0:
            errors.append(Error(f"{name} must be above zero.", hint=f"Set {name} to a number of seconds, e.g. 0.5.",
                                id="cache_app.E004"))
    default_timeout = app_settings.CACHE_DEFAULT_TIMEOUT
    if default_timeout is not None and not _is_number(default_timeout):
        errors.append(Error("CACHE_DEFAULT_TIMEOUT must be a number of seconds.",
                            hint="Correct CACHE_DEFAULT_TIMEOUT in the settings (or the environment).",
                            id="cache_app.E003"))
    elif default_timeout is not None and default_timeout < 0:
        errors.append(Error("CACHE_DEFAULT_TIMEOUT must be zero or more.", hint="The default is 300 seconds.",
                            id="cache_app.E004"))
    for name in ("CACHE_KEY_PREFIX", "HEALTH_TOKEN"):
        if not isinstance(getattr(app_settings, name), str):
            errors.append(Error(f"{name} must be a string.", hint=f"Correct {name} in the settings.",
                                id="cache_app.E007"))
    return errors


def check_health(app_configs=None, **kwargs) -> list[Error]:
    """HEALTH_CHECKS and HEALTH_AUTHENTICATORS: None (each app's own), or dotted paths of checks and functions.

    Unlike METRICS_COLLECTORS, the paths of a list set here are imported: /health answers 503 while
    one of them is not a check (or not a function), and only a project that sets the list pays for it.
    """
    from cache_app.health import HealthConfigurationError, health_authenticator, health_check_class

    errors: list[Error] = []
    for name, load in (("HEALTH_CHECKS", health_check_class), ("HEALTH_AUTHENTICATORS", health_authenticator)):
        paths = getattr(app_settings, name)
        if paths is None:
            continue
        if not _is_list_of_strings(paths) or not paths:
            # An empty list of checks would make /health answer "ok" whatever is down.
            errors.append(Error(f"{name} must be None or a non-empty list of dotted paths.",
                                hint=f"Leave {name} unset for the installed apps' own.", id="cache_app.E008"))
            continue
        components: dict[str, str] = {}
        for path in paths:
            try:
                import_string(path)
            except Exception:  # noqa: BLE001 - a broken module cannot be imported either
                errors.append(Error(f"{name}: {path!r} cannot be imported.",
                                    hint=f"List importable dotted paths, or leave {name} unset.", id="cache_app.E009"))
                continue
            try:
                loaded = load(path)
            except HealthConfigurationError as error:
                kind = "cache_app.health.HealthCheck subclasses" if name == "HEALTH_CHECKS" else "functions (request) -> bool"
                errors.append(Error(str(error), hint=f"List {kind}, or leave {name} unset.", id="cache_app.E010"))
                continue
            if name == "HEALTH_CHECKS":
                if loaded.component in components:
                    errors.append(Error(
                        f"HEALTH_CHECKS: {components[loaded.component]!r} and {path!r} both report "
                        f"{loaded.component!r}.",
                        hint="Keep one check per component: /health shows one result per component.",
                        id="cache_app.E011",
                    ))
                components[loaded.component] = path
    return errors


def check_metrics(app_configs=None, **kwargs) -> list[Error]:
    """METRICS_ALLOWED_IPS holds addresses or networks; METRICS_COLLECTORS importable classes."""
    errors: list[Error] = []
    allowed = app_settings.METRICS_ALLOWED_IPS
    if not _is_list_of_strings(allowed):
        errors.append(Error("METRICS_ALLOWED_IPS must be a list of IP addresses or networks.",
                            hint='e.g. METRICS_ALLOWED_IPS = ["127.0.0.1", "10.0.0.0/8"]', id="cache_app.E007"))
    else:
        for position, entry in enumerate(allowed, start=1):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                # The position, not the value: a malformed setting is reported without echoing it.
                errors.append(Error(
                    f"METRICS_ALLOWED_IPS: entry {position} is not an IP address or network.",
                    hint="Write an address (10.0.0.5) or a network in CIDR form (10.0.0.0/8).", id="cache_app.E005",
                ))
    collectors = app_settings.METRICS_COLLECTORS
    if not _is_list_of_strings(collectors):
        errors.append(Error("METRICS_COLLECTORS must be a list of dotted paths.",
                            hint='e.g. METRICS_COLLECTORS = ["cache_app.metrics.RedisCollector"]', id="cache_app.E007"))
        return errors
    for path in collectors:
        if not _importable(path):
            errors.append(Error(
                f"METRICS_COLLECTORS: {path!r} cannot be imported.",
                hint="List collector classes of installed apps, e.g. cache_app.metrics.RedisCollector.",
                id="cache_app.E006",
            ))
    return errors
