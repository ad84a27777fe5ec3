"""Settings for tests that run manage.py in a subprocess (kill -9, two processes at once).

The ops database is a file (OPSDESK_TEST_OPS_DB) shared between the test and its subprocesses; the
`fake` alias runs the fault-injecting engine with the script in OPSDESK_TEST_FAKE_SCRIPT.
BACKUP_DIR and BACKUP_LOCK_DIR come from the environment through ops_project.settings.
"""
import os

from tests.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["OPSDESK_TEST_OPS_DB"],
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE", "timeout": 30},
    },
    "fake": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["OPSDESK_TEST_OPS_DB"] + ".fake",
        "BACKUP_ENGINE": "tests.backups.fakes.ScriptDumpEngine",
        "FAKE_SCRIPT": os.environ.get("OPSDESK_TEST_FAKE_SCRIPT", ""),
        "FAKE_RESTORE": os.environ["OPSDESK_TEST_OPS_DB"] + ".restored",
        "FAKE_RESTORE_SLEEP": os.environ.get("OPSDESK_TEST_FAKE_RESTORE_SLEEP", "0"),
    },
}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
