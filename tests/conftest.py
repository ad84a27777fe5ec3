"""Shared fixtures: real servers, scratch databases and an isolated backup folder.

Service tests talk to the real MariaDB, PostgreSQL and Redis of the machine. When a server cannot
be reached the test is skipped with the reason, unless OPSDESK_REQUIRE_SERVICES=1 (set by .ci/run),
in which case it fails: CI must never pass by skipping.
"""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from django.db import connections

MARIADB = {"HOST": "127.0.0.1", "PORT": 3306, "USER": "root", "PASSWORD": ""}
POSTGRES = {"HOST": "127.0.0.1", "PORT": 5432, "USER": "postgres", "PASSWORD": ""}
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def services_required() -> bool:
    return os.environ.get("OPSDESK_REQUIRE_SERVICES") == "1"


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or fail, under OPSDESK_REQUIRE_SERVICES=1) unless host:port accepts connections."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as error:
        message = f"{name} is not reachable at {host}:{port} ({error})"
        if services_required():
            pytest.fail(f"{message}; OPSDESK_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)


def register_alias(alias: str, settings_dict: dict) -> None:
    """Make a database reachable as connections[alias] for the rest of the test."""
    # configure_settings() insists on a `default` entry; a dummy one only fills in the defaults.
    configured = connections.configure_settings({"default": {"ENGINE": "django.db.backends.dummy"}, alias: settings_dict})
    connections.settings[alias] = configured[alias]


def unregister_alias(alias: str) -> None:
    if alias in connections:
        connections[alias].close()
        del connections[alias]
    connections.settings.pop(alias, None)


@pytest.fixture(autouse=True)
def backup_dir(settings, tmp_path):
    """Every test writes backups and locks into its own folder."""
    folder = tmp_path / "backups"
    settings.BACKUP_DIR = folder
    settings.BACKUP_LOCK_DIR = tmp_path / "locks"
    storages = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages["backups"]["OPTIONS"] = {**storages["backups"]["OPTIONS"], "location": folder}
    settings.STORAGES = storages
    return folder


@pytest.fixture
def mariadb_database() -> Iterator[str]:
    """A scratch MariaDB database registered as the alias `mariadb`, dropped afterwards."""
    require_service("MariaDB", MARIADB["HOST"], MARIADB["PORT"])
    import MySQLdb

    name = f"opsdesk_t_{uuid.uuid4().hex[:12]}"
    admin = MySQLdb.connect(host=MARIADB["HOST"], port=MARIADB["PORT"], user=MARIADB["USER"], passwd="")
    admin.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    register_alias("mariadb", {
        "ENGINE": "django.db.backends.mysql", "NAME": name, **MARIADB,
        "OPTIONS": {"charset": "utf8mb4"},
    })
    try:
        yield "mariadb"
    finally:
        unregister_alias("mariadb")
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A scratch PostgreSQL database registered as the alias `postgres`, dropped afterwards."""
    require_service("PostgreSQL", POSTGRES["HOST"], POSTGRES["PORT"])
    import psycopg

    name = f"opsdesk_t_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(
        host=POSTGRES["HOST"], port=POSTGRES["PORT"], user=POSTGRES["USER"], dbname="postgres",
        autocommit=True,
    )
    admin.execute(f'CREATE DATABASE "{name}"')
    register_alias("postgres", {"ENGINE": "django.db.backends.postgresql", "NAME": name, **POSTGRES})
    try:
        yield "postgres"
    finally:
        unregister_alias("postgres")
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis; tests must use their own key prefix and never FLUSHALL/FLUSHDB."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def unique_prefix() -> str:
    return f"opsdesk-test-{uuid.uuid4().hex[:12]}"
