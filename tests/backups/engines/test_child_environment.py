"""What a running dump or restore tool can read of opsdesk's environment (docs/FAULTS.md: secrets).

Each test puts secrets into our own environment, runs the real client tool, and reads the tool's
/proc/<pid>/environ while it waits for input: only the allow-list may be there.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from backups_app.engines import get_engine

pytestmark = [pytest.mark.services, pytest.mark.django_db]

SECRETS = {
    "SECRET_KEY": "django-secret-value",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "VAULT_TOKEN": "vault-secret-value",
    "DATABASE_URL_CHAT": "mysql://chat:db-secret-value@db/chat",
    "PGPASSWORD": "pg-secret-value",
    "GEMINI_API_KEY": "gemini-secret-value",
}


def child_environments() -> list[dict[str, str]]:
    """The environments of our own running child processes, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != os.getpid():  # field 4 of stat: the parent's pid
                continue
            raw = (stat.parent / "environ").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        found.append(dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item))
    return found


class InspectingStream(io.RawIOBase):
    """A dump stream that, when the tool first asks for input, records what the tool can see."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.seen:
            self.seen = child_environments()
        return 0


@pytest.fixture
def secret_environment(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LC_TIME", "C")


def assert_only_allowed(environments: list[dict[str, str]]) -> None:
    assert environments, "no running child process was found"
    for environment in environments:
        for name in SECRETS:
            assert name not in environment
        assert not any(value in environment.values() for value in SECRETS.values())
        assert environment.get("PATH") == os.environ["PATH"]
        assert environment.get("LC_TIME") == "C"


def test_psql_sees_only_the_allow_list(postgres_database, secret_environment):
    stream = InspectingStream()
    get_engine(postgres_database).restore(io.BufferedReader(stream))
    assert_only_allowed(stream.seen)
    assert all(environment.get("PGDATABASE") for environment in stream.seen)


def test_mariadb_client_sees_only_the_allow_list(mariadb_database, secret_environment, settings):
    # The feeding step itself: a whole restore of an empty stream stops at its staging checks.
    # The client path (the parallel loader talks through the driver and starts no child process).
    settings.BACKUP_RESTORE_PARALLELISM = 1
    engine = get_engine(mariadb_database)
    stream = InspectingStream()
    engine.restore_into(io.BufferedReader(stream), engine.database_name)
    assert_only_allowed(stream.seen)
