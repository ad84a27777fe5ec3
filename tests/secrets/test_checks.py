"""secrets_app's settings: defaults (secrets_app/conf.py) and system checks (secrets_app/checks.py)."""
from __future__ import annotations

import pytest
from django.core import checks

from secrets_app.checks import check_provider, check_setting_types
from secrets_app.conf import DEFAULTS, app_settings


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_every_setting_has_the_default_of_the_embedded_project(settings, monkeypatch):
    import ops_project.settings as embedded

    compared = [name for name in DEFAULTS if hasattr(embedded, name)
                # Set from the environment in the embedded project (or differ in production on purpose).
                and name not in ("SECRETS_REQUIRED", "SECRETS_AWS_REGION", "SECRETS_AWS_ENDPOINT_URL",
                                 "SECRETS_VAULT_ADDR", "SECRETS_AZURE_VAULT_URL", "REDIS_URL", "CACHE_KEY_PREFIX")]
    assert "SECRETS_CACHE_TTL" in compared and "SECRETS_ENV_FILE" in compared
    for name in compared:
        delattr(settings, name)
    for name in compared:
        assert getattr(app_settings, name) == getattr(embedded, name), name
    del settings.SECRETS_REQUIRED, settings.REDIS_URL, settings.CACHE_KEY_PREFIX
    assert app_settings.SECRETS_REQUIRED == [] and app_settings.REDIS_URL == ""
    assert app_settings.CACHE_KEY_PREFIX == "opsdesk"


def test_the_project_settings_pass_every_check():
    assert [message for message in checks.run_checks() if message.id and message.id.startswith("secrets_app.")] == []


@pytest.mark.parametrize("provider", ["local", "aws", "vault", "azure", "tests.secrets.conftest.ScriptedProvider"])
def test_known_providers_pass(settings, provider):
    settings.SECRETS_PROVIDER = provider
    assert check_provider() == []


def test_a_provider_setting_that_get_secret_does_not_use_is_a_warning(settings):
    """SECRETS_PROVIDER as a Django setting alone chooses nothing: secrets_configure() does."""
    from secrets_app.checks import check_provider_in_use

    settings.SECRETS_PROVIDER = "local"  # what tests/settings.py configured
    assert check_provider_in_use() == []
    for provider in ("vault", "tests.secrets.conftest.ScriptedProvider"):
        settings.SECRETS_PROVIDER = provider
        warnings = check_provider_in_use()
        assert ids(warnings) == ["secrets_app.W001"] and "secrets_configure" in warnings[0].hint
        assert provider in warnings[0].msg and "'local'" in warnings[0].msg
    del settings.SECRETS_PROVIDER
    assert check_provider_in_use() == []


@pytest.mark.parametrize("provider, expected", [
    ("gcp", "secrets_app.E001"),
    ("", "secrets_app.E001"),
    (None, "secrets_app.E001"),
    ("myproject.secrets.NoSuchProvider", "secrets_app.E002"),
    ("secrets_app.providers.base.SecretValue", "secrets_app.E002"),  # importable, not a provider
])
def test_an_unknown_provider_is_an_error(settings, provider, expected):
    settings.SECRETS_PROVIDER = provider
    errors = check_provider()
    assert ids(errors) == [expected] and "SECRETS_PROVIDER" in errors[0].msg and errors[0].hint


@pytest.mark.parametrize("name, value, expected", [
    ("SECRETS_CACHE_TTL", "300", "secrets_app.E003"),
    ("SECRETS_CACHE_TTL", -1, "secrets_app.E004"),
    ("SECRETS_MAX_STALE", None, "secrets_app.E003"),
    ("SECRETS_RETRY_MAX", 0, "secrets_app.E004"),
    ("SECRETS_TIMEOUT", 0.0, "secrets_app.E004"),
    ("SECRETS_TIMEOUT", False, "secrets_app.E003"),
    ("SECRETS_ACCESS_LOG_FLUSH_SECONDS", -5, "secrets_app.E004"),
    ("SECRETS_REQUIRED", "SECRET_KEY", "secrets_app.E005"),
    ("SECRETS_REQUIRED", ["SECRET_KEY", ""], "secrets_app.E005"),
    ("SECRETS_REDIS_URL", "http://:pw-53cr3t@redis:6379/0", "secrets_app.E006"),
    ("SECRETS_VAULT_MOUNT", None, "secrets_app.E007"),
])
def test_a_bad_value_is_an_error_naming_the_setting(settings, name, value, expected):
    setattr(settings, name, value)
    errors = check_setting_types()
    assert ids(errors) == [expected] and name in errors[0].msg
    assert "53cr3t" not in errors[0].msg  # a URL's password is never echoed


def test_zero_seconds_is_allowed_where_it_means_something(settings):
    settings.SECRETS_CACHE_TTL = 0  # every read asks the provider
    settings.SECRETS_ACCESS_LOG_FLUSH_SECONDS = 0
    settings.SECRETS_REDIS_URL = "sentinel://sentinel-1:26379/opsdesk/0"
    assert check_setting_types() == []
