"""Fixtures of the backup tests: SQLite databases with data, the fake engine, subprocess runs."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import register_alias, unregister_alias

from .fakes import GOOD_SCRIPT

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE author (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, bio TEXT, photo BLOB,
                     rating REAL, joined TEXT);
CREATE TABLE "çà table ✓" (id INTEGER PRIMARY KEY, note TEXT);
CREATE TABLE book (id INTEGER PRIMARY KEY, author_id INTEGER REFERENCES author(id), title TEXT);
CREATE INDEX book_title ON book(title);
CREATE VIEW author_books AS SELECT author.name, count(book.id) AS books FROM author
    LEFT JOIN book ON book.author_id = author.id GROUP BY author.id;
CREATE TABLE audit (what TEXT);
CREATE TRIGGER author_insert AFTER INSERT ON author BEGIN INSERT INTO audit VALUES ('new ' || NEW.name); END;
"""


def fill(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.executescript(SCHEMA)
    connection.executemany(
        "INSERT INTO author (name, bio, photo, rating, joined) VALUES (?, ?, ?, ?, ?)",
        [
            ("Zoë 🐍", "line one\nline two; -- not a comment", bytes(range(256)), 4.5, "2024-01-01 10:00:00.123456"),
            ("O'Brien", None, None, None, None),
            ("emoji 👍🏽 and quotes \" '", "tab\tend", b"\x00\x01", -0.0, ""),
        ],
    )
    connection.executemany("INSERT INTO book (author_id, title) VALUES (?, ?)", [(1, "A"), (1, "B"), (2, "C")])
    connection.execute("INSERT INTO \"çà table ✓\" VALUES (1, 'ünïcödé')")
    connection.commit()
    connection.close()


def snapshot(path: Path) -> list[str]:
    """Everything in a SQLite database, as SQL (schema and data)."""
    connection = sqlite3.connect(path)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


@pytest.fixture
def sqlite_alias(tmp_path):
    """A file SQLite database with awkward data, registered as the alias `app`."""
    path = tmp_path / "app.sqlite3"
    fill(path)
    register_alias("app", {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)})
    try:
        yield path
    finally:
        unregister_alias("app")


@pytest.fixture
def fake_alias(tmp_path):
    """Register the alias `fake` on the fault-injecting engine; call it with a script to run."""
    registered = []

    def register(script: str = GOOD_SCRIPT, **extra) -> dict:
        settings_dict = {
            "ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "fake.sqlite3"),
            "BACKUP_ENGINE": "tests.backups.fakes.ScriptDumpEngine", "FAKE_SCRIPT": script,
            "FAKE_RESTORE": str(tmp_path / "restored.sql"), **extra,
        }
        unregister_alias("fake")  # connections[] caches the previous registration's settings
        register_alias("fake", settings_dict)
        registered.append("fake")
        return settings_dict

    yield register
    for alias in registered:
        unregister_alias(alias)


def stored_files(folder: Path) -> list[str]:
    """Every file in the backup folder, hidden temporaries included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


class ManageRunner:
    """manage.py in subprocesses sharing a file ops database, a backup folder and a lock folder."""

    def __init__(self, tmp_path: Path) -> None:
        self.ops_db = tmp_path / f"ops-{uuid.uuid4().hex[:8]}.sqlite3"
        self.backup_dir = tmp_path / "sub-backups"
        self.lock_dir = tmp_path / "sub-locks"
        self.env = {
            key: value for key, value in os.environ.items()
            if not key.startswith(("DATABASE_URL", "BACKUP_", "REDIS_URL", "DJANGO_SETTINGS_MODULE"))
        }
        self.env.update(
            DJANGO_SETTINGS_MODULE="tests.backups.subprocess_settings",
            OPSDESK_TEST_OPS_DB=str(self.ops_db), BACKUP_DIR=str(self.backup_dir),
            BACKUP_LOCK_DIR=str(self.lock_dir), PYTHONPATH=str(PROJECT_ROOT),
        )
        self.run("migrate", "--noinput", "-v", "0").check_returncode()

    def command(self, *args: str) -> list[str]:
        return [sys.executable, str(PROJECT_ROOT / "manage.py"), *args]

    def environment(self, script: str | None = None, **extra: str) -> dict:
        env = dict(self.env, **extra)
        if script is not None:
            env["OPSDESK_TEST_FAKE_SCRIPT"] = script
        return env

    def run(self, *args: str, script: str | None = None, timeout: float = 120, **extra: str):
        return subprocess.run(
            self.command(*args), cwd=PROJECT_ROOT, env=self.environment(script, **extra),
            capture_output=True, text=True, timeout=timeout,
        )

    def start(self, *args: str, script: str | None = None, **extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*args), cwd=PROJECT_ROOT, env=self.environment(script, **extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def records(self) -> list[tuple]:
        connection = sqlite3.connect(self.ops_db, timeout=30)
        try:
            return connection.execute(
                "SELECT name, database, status, error_message FROM backups_app_backuprecord ORDER BY id"
            ).fetchall()
        finally:
            connection.close()


@pytest.fixture
def manage(tmp_path) -> ManageRunner:
    return ManageRunner(tmp_path)


#: Screenshots taken in this run, for the path printed at its end.
SCREENSHOTS_TAKEN: list[Path] = []


def screenshots_folder() -> Path:
    """Where the browser tests keep their screenshots: OPSDESK_SCREENSHOTS or var/screenshots."""
    return Path(os.environ.get("OPSDESK_SCREENSHOTS") or PROJECT_ROOT / "var" / "screenshots")


def pytest_terminal_summary(terminalreporter) -> None:
    if SCREENSHOTS_TAKEN:
        terminalreporter.write_line(
            f"{len(SCREENSHOTS_TAKEN)} admin screenshots (1400 px wide) in {screenshots_folder()}"
        )
