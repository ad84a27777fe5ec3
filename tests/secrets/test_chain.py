"""The provider chain on its own: the configured provider, then the fallback, with back-off.

The cache around it (stale-if-error, single flight) is tested through SecretManager in
test_manager.py; here only what the stores answered, and when the provider is asked at all.
"""
from __future__ import annotations

import pytest

from secrets_app.exceptions import SecretNotFound
from secrets_app.providers.chain import ProviderChain
from secrets_app.providers.local import LocalProvider
from tests.secrets.conftest import ScriptedProvider


def chain_over(values: dict[str, str], environ: dict[str, str]) -> tuple[ProviderChain, ScriptedProvider]:
    primary = ScriptedProvider(values)
    return ProviderChain(primary, LocalProvider(environ=environ), retry_max=60), primary


def test_the_provider_answers_first_and_the_fallback_only_when_it_does_not_hold_the_secret():
    chain, _ = chain_over({"TOKEN": "from-provider"}, {"TOKEN": "from-env", "ONLY_ENV": "env-only"})

    answered = chain.resolve("TOKEN", now=0.0)
    assert (answered.secret.value, answered.from_fallback, answered.failure) == ("from-provider", False, "")
    fallen_back = chain.resolve("ONLY_ENV", now=0.0)
    assert (fallen_back.secret.value, fallen_back.from_fallback, fallen_back.failure) == ("env-only", True, "")


def test_a_secret_nobody_holds_names_every_store_tried():
    chain, _ = chain_over({}, {})

    with pytest.raises(SecretNotFound, match="scripted") as raised:
        chain.get("ABSENT")
    assert raised.value.sources_tried[0] == "scripted"
    assert len(raised.value.sources_tried) > 1


def test_a_failing_provider_is_not_asked_again_until_its_back_off_ends():
    chain, primary = chain_over({"TOKEN": "v1"}, {"TOKEN": "from-env"})
    primary.mode = "unavailable"

    first = chain.resolve("TOKEN", now=100.0)
    assert first.failure and first.secret.value == "from-env" and not first.denied
    during = chain.resolve("TOKEN", now=100.5)
    assert "backing off" in during.failure
    assert primary.calls["TOKEN"] == 1
    primary.mode = "ok"
    after = chain.resolve("TOKEN", now=chain.retry_at(100.5) + 0.01)
    assert (after.secret.value, after.failure) == ("v1", "")
    assert primary.calls["TOKEN"] == 2


def test_a_denial_is_reported_as_such():
    chain, primary = chain_over({"TOKEN": "v1"}, {})
    primary.mode = "denied"

    resolution = chain.resolve("TOKEN", now=0.0)
    assert resolution.denied and resolution.secret is None
    assert resolution.sources_tried[0] == "scripted (denied)"
