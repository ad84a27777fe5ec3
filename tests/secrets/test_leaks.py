"""Secret values never reach logs, exception messages, the technical 500 page, admin pages or repr."""
from __future__ import annotations

import logging
import sys

import pytest
from django.core import mail
from django.test import RequestFactory, override_settings
from django.views.debug import ExceptionReporter
from django.views.decorators.debug import sensitive_variables

from secrets_app import get_secret
from secrets_app.manager import SecretManager
from secrets_app.providers.local import LocalProvider
from secrets_app.providers.vault import VaultCredentials, VaultProvider
from tests.secrets.conftest import ScriptedProvider

VALUE = "Leak-Canary-7f3a9c1e-value"


def technical_500_text(view, *args) -> str:
    request = RequestFactory().get("/boom/")
    try:
        view(request, *args)
    except Exception:
        return ExceptionReporter(request, *sys.exc_info()).get_traceback_text()
    raise AssertionError("the view did not raise")


def test_secret_in_a_view_local_is_hidden_from_the_technical_500(use_default_manager):
    use_default_manager(ScriptedProvider({"SGP_TOKEN": VALUE}), fallback=LocalProvider(environ={}))

    @sensitive_variables("token")
    def view(request):
        token = get_secret("SGP_TOKEN")
        raise ValueError(f"upstream rejected the call ({len(token)} chars)")

    text = technical_500_text(view)
    assert "upstream rejected" in text and "token" in text
    assert VALUE not in text


def test_failure_inside_the_manager_does_not_show_values_of_its_frames(use_default_manager):
    provider = ScriptedProvider({"GEMINI_API_KEY": VALUE})
    use_default_manager(provider, fallback=LocalProvider(environ={"GEMINI_API_KEY": VALUE}))
    provider.mode = "explode"

    def view(request):
        return get_secret("GEMINI_API_KEY")

    text = technical_500_text(view)
    assert "unexpected failure deep in an SDK" in text
    assert VALUE not in text


def _render_both(view) -> tuple[str, str]:
    request = RequestFactory().get("/boom/")
    try:
        view(request)
    except RuntimeError:
        reporter = ExceptionReporter(request, *sys.exc_info())
        return reporter.get_traceback_text(), reporter.get_traceback_html()
    raise AssertionError("the view did not raise")


def _databases_with_password(settings) -> dict:
    databases = {alias: dict(config) for alias, config in settings.DATABASES.items()}
    databases["default"]["PASSWORD"] = VALUE + "-db"
    return databases


def test_settings_holding_secrets_are_cleansed_on_the_500_page(settings):
    settings.SGP_TOKEN = VALUE
    settings.GEMINI_API_KEY = VALUE + "-gemini"
    settings.SECRET_KEY = VALUE + "-django-key-with-enough-length-for-checks"

    def view(request):
        raise RuntimeError("boom")

    # The password is built in a helper so that no frame of the traceback holds it in a local.
    with override_settings(DATABASES=_databases_with_password(settings), DEBUG=True):
        pages = _render_both(view)
    for page in pages:
        assert "SGP_TOKEN" in page and "GEMINI_API_KEY" in page and "DATABASES" in page
        assert VALUE not in page


def test_no_value_in_logs_or_mails_across_every_outcome(caplog, tmp_path):
    provider = ScriptedProvider({"TOKEN": VALUE})
    manager = SecretManager(provider, fallback=LocalProvider(environ={"FALLBACK": VALUE + "-env"}),
                            ttl=0.01, retry_max=0.01, fingerprint_key=b"k")
    with caplog.at_level(logging.DEBUG):
        manager.get("TOKEN")                      # fetched
        provider.mode = "unavailable"
        import time

        time.sleep(0.02)
        manager.get("TOKEN")                      # stale
        manager.get("FALLBACK")                   # fallback
        provider.mode = "denied"
        time.sleep(0.05)
        manager.get("TOKEN")                      # denied -> alert + stale
        with pytest.raises(Exception) as raised:
            manager.get("ABSENT")                 # missing
        provider.mode = "ok"
        provider.set("TOKEN", VALUE + "-rotated")
        manager.refresh("TOKEN")
    for sign_of_each_outcome in ("stale-if-error", "fell back", "ALERT"):
        assert sign_of_each_outcome in caplog.text
    assert VALUE not in caplog.text
    assert VALUE not in str(raised.value)
    assert all(VALUE not in message.body and VALUE not in message.subject for message in mail.outbox)
    events, hits, entries = manager.drain()
    assert VALUE not in repr(events) + repr(entries)


def test_repr_of_manager_entries_values_and_credentials():
    manager = SecretManager(ScriptedProvider({"TOKEN": VALUE}), fallback=LocalProvider(environ={}), fingerprint_key=b"k")
    manager.get("TOKEN")
    credentials = VaultCredentials(token=VALUE, role_id=VALUE + "r", secret_id=VALUE + "s")
    vault = VaultProvider(address="http://127.0.0.1:1", credentials=credentials)
    text = repr(manager) + repr(manager.cached()) + repr(credentials) + repr(vault) + repr(vault.options())
    assert VALUE not in text


@pytest.mark.django_db
def test_admin_pages_never_show_values(admin_client, use_default_manager):
    use_default_manager(ScriptedProvider({"SGP_TOKEN": VALUE}), fallback=LocalProvider(environ={}))
    assert get_secret("SGP_TOKEN") == VALUE
    for url in ("/admin/secrets_app/knownsecret/", "/admin/secrets_app/secretaccess/"):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert VALUE not in response.content.decode()
    assert "SGP_TOKEN" in admin_client.get("/admin/secrets_app/knownsecret/").content.decode()
