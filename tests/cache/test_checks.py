"""cache_app's settings: defaults (cache_app/conf.py) and system checks (cache_app/checks.py)."""
from __future__ import annotations

import pytest
from django.core import checks

from cache_app.checks import check_health, check_metrics, check_redis, check_setting_types
from cache_app.conf import DEFAULTS, app_settings


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_every_setting_has_the_default_of_the_embedded_project(settings):
    import ops_project.settings as embedded

    # REDIS_URL and the broker are pinned by tests/settings.py; HEALTH_TOKEN is a secret; Celery's queue
    # name is the embedded project's choice (a host project's Celery uses its own, "celery" by default).
    compared = [name for name in DEFAULTS if hasattr(embedded, name) and name not in (
        "REDIS_URL", "CELERY_BROKER_URL", "HEALTH_TOKEN", "CELERY_TASK_DEFAULT_QUEUE")]
    assert "METRICS_COLLECTORS" in compared and "HEALTH_CHECK_TIMEOUT" in compared
    for name in compared:
        delattr(settings, name)
    for name in compared:
        assert getattr(app_settings, name) == getattr(embedded, name), name
    del settings.REDIS_URL, settings.CELERY_BROKER_URL, settings.HEALTH_TOKEN, settings.CELERY_TASK_DEFAULT_QUEUE
    assert (app_settings.REDIS_URL, app_settings.CELERY_BROKER_URL, app_settings.HEALTH_TOKEN) == ("", "", "")
    assert app_settings.CELERY_TASK_DEFAULT_QUEUE == "celery"


def test_the_default_collectors_are_those_of_the_installed_apps(settings):
    del settings.METRICS_COLLECTORS
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app not in ("backups_app", "secrets_app")]
    assert app_settings.METRICS_COLLECTORS == ["cache_app.metrics.RedisCollector"]


def test_the_project_settings_pass_every_check():
    assert [message for message in checks.run_checks() if message.id and message.id.startswith("cache_app.")] == []


@pytest.mark.parametrize("url, expected", [
    ("http://:pw-53cr3t@redis:6379/0", ["cache_app.E001"]),
    ("redis.internal:6379", ["cache_app.E001"]),
    ("sentinel://:pw-53cr3t@/opsdesk/0", ["cache_app.E001"]),
    ("sentinel://sentinel-1:26379/opsdesk/zero", ["cache_app.E001"]),
    (6379, ["cache_app.E001"]),
    ("redis://:pw-53cr3t@redis:6379/0", []),
    ("sentinel://sentinel-1:26379,sentinel-2:26379/opsdesk/0", []),
    ("unix:///run/redis.sock?db=0", []),
])
def test_a_malformed_redis_url_is_an_error_without_its_password(settings, url, expected):
    settings.REDIS_URL = url
    errors = check_redis()
    assert ids(errors) == expected
    assert all("53cr3t" not in error.msg and "REDIS_URL" in error.msg for error in errors)


def test_redis_without_a_key_prefix_is_an_error(settings):
    settings.REDIS_URL = "redis://localhost:6379/0"
    settings.CACHE_KEY_PREFIX = ""
    assert ids(check_redis()) == ["cache_app.E002"]
    settings.REDIS_URL = ""
    assert check_redis() == []  # the in-memory cache needs no prefix


@pytest.mark.parametrize("name, value, expected", [
    ("HEALTH_CHECK_TIMEOUT", "0.8", "cache_app.E003"),
    ("HEALTH_CHECK_TIMEOUT", 0, "cache_app.E004"),
    ("CACHE_SOCKET_TIMEOUT", -0.5, "cache_app.E004"),
    ("CACHE_SOCKET_CONNECT_TIMEOUT", None, "cache_app.E003"),
    ("CACHE_CIRCUIT_BREAKER_SECONDS", True, "cache_app.E003"),
    ("CACHE_ERROR_LOG_INTERVAL", 0, "cache_app.E004"),
    ("CACHE_DEFAULT_TIMEOUT", "300", "cache_app.E003"),
    ("CACHE_DEFAULT_TIMEOUT", -1, "cache_app.E004"),
    ("HEALTH_TOKEN", None, "cache_app.E007"),
])
def test_a_bad_value_is_an_error_naming_the_setting(settings, name, value, expected):
    setattr(settings, name, value)
    errors = check_setting_types()
    assert ids(errors) == [expected] and name in errors[0].msg and errors[0].hint


@pytest.mark.parametrize("name", ["HEALTH_CHECKS", "HEALTH_AUTHENTICATORS"])
@pytest.mark.parametrize("value, expected", [
    (None, []),
    ([], ["cache_app.E008"]),
    ("cache_app.health.RedisCheck", ["cache_app.E008"]),
    (["cache_app.health.NoSuchCheck"], ["cache_app.E009"]),
    (["no_such_app.health.Check"], ["cache_app.E009"]),
])
def test_health_lists_are_unset_or_importable(settings, name, value, expected):
    setattr(settings, name, value)
    assert ids(check_health()) == expected


@pytest.mark.parametrize("name, value, expected", [
    ("HEALTH_CHECKS", ["cache_app.health.DatabaseCheck", "backups_app.health.StorageCheck"], []),
    ("HEALTH_AUTHENTICATORS", ["cache_app.health.health_token", "backups_app.health.api_token_of_staff"], []),
    # In a module not imported yet: the attribute is looked up too, not only the module.
    ("HEALTH_CHECKS", ["backups_app.health.NoSuchCheck"], ["cache_app.E009"]),
    ("HEALTH_CHECKS", ["cache_app.conf.AppSettings"], ["cache_app.E010"]),
    ("HEALTH_CHECKS", ["cache_app.health.bearer_token"], ["cache_app.E010"]),
    ("HEALTH_CHECKS", ["cache_app.health.HealthCheck"], ["cache_app.E010"]),  # no component
    ("HEALTH_AUTHENTICATORS", ["cache_app.conf.AppSettings"], ["cache_app.E010"]),
    ("HEALTH_AUTHENTICATORS", ["cache_app.conf.DEFAULTS"], ["cache_app.E010"]),
    ("HEALTH_CHECKS", ["cache_app.health.DatabaseCheck", "backups_app.health.DatabaseCheck"], ["cache_app.E011"]),
])
def test_health_lists_name_checks_and_functions(settings, name, value, expected):
    """What /health would refuse to run (cache_app.health.HealthConfigurationError) stops `manage.py check`."""
    setattr(settings, name, value)
    errors = check_health()
    assert ids(errors) == expected and all(name in error.msg for error in errors)


def test_a_cache_that_never_expires_is_allowed(settings):
    settings.CACHE_DEFAULT_TIMEOUT = None
    assert check_setting_types() == []


@pytest.mark.parametrize("name, value, expected", [
    ("METRICS_ALLOWED_IPS", ["127.0.0.1", "10.0.0.0/33"], "cache_app.E005"),
    ("METRICS_ALLOWED_IPS", ["prometheus.internal"], "cache_app.E005"),
    ("METRICS_ALLOWED_IPS", "127.0.0.1", "cache_app.E007"),
    ("METRICS_COLLECTORS", ["cache_app.metrics.NoSuchCollector"], "cache_app.E006"),
    ("METRICS_COLLECTORS", ["no_such_app.metrics.Collector"], "cache_app.E006"),
    ("METRICS_COLLECTORS", ["cache_app.no_such_module.Collector"], "cache_app.E006"),
    ("METRICS_COLLECTORS", "cache_app.metrics.RedisCollector", "cache_app.E007"),
])
def test_a_bad_metrics_setting_is_an_error(settings, name, value, expected):
    setattr(settings, name, value)
    errors = check_metrics()
    assert ids(errors) == [expected] and name in errors[0].msg
    assert "prometheus.internal" not in errors[0].msg  # the position, not the value


@pytest.mark.parametrize("collector, expected", [
    ("tests.cache.unloaded_collectors.EmptyCollector", []),
    ("tests.cache.unloaded_collectors.NoSuchCollector", ["cache_app.E006"]),
])
def test_a_collector_in_a_module_not_loaded_yet_is_looked_up(settings, monkeypatch, collector, expected):
    """/metrics would answer 500 for a class missing from its module: `check` looks the class up too."""
    import sys

    monkeypatch.delitem(sys.modules, "tests.cache.unloaded_collectors", raising=False)
    settings.METRICS_COLLECTORS = ["cache_app.metrics.RedisCollector", collector]
    assert ids(check_metrics()) == expected


def test_manage_py_check_reports_a_missing_check_in_a_module_not_loaded_yet(tmp_path):
    """`check` runs before backups_app.health is imported: the class must be looked up all the same."""
    from tests.test_project import run_manage

    result = run_manage("check", DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}",
                        HEALTH_CHECKS="cache_app.health.DatabaseCheck,backups_app.health.NoSuchCheck")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cache_app.E009" in result.stderr and "backups_app.health.NoSuchCheck" in result.stderr
