"""Database engines, one file per family, chosen from the DATABASES entry's ENGINE."""
from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils.module_loading import import_string

from .base import DumpEngine

ENGINES = {
    "django.db.backends.mysql": "backups_app.engines.mysql.MySQLDumpEngine",
    "django.db.backends.postgresql": "backups_app.engines.postgresql.PostgreSQLDumpEngine",
    "django.db.backends.sqlite3": "backups_app.engines.sqlite.SQLiteDumpEngine",
}

#: Rows left out of every backup of opsdesk's own database (`default`): a copy of a live session
#: logs its holder in as that session's user, superusers included (docs/FAULTS.md: leaked-database).
CONTROL_TABLES_WITHOUT_DATA = ("django_session",)


def get_engine(alias: str) -> DumpEngine:
    """The engine for a configured database alias, or for a media alias (``media``, ``media:<storage>``)."""
    engine = _engine_for(alias)
    if alias == DEFAULT_DB_ALIAS:
        engine.tables_without_data = CONTROL_TABLES_WITHOUT_DATA
    return engine


def _engine_for(alias: str) -> DumpEngine:
    if alias not in connections.settings:
        from .media import MediaEngine, is_media_alias

        if is_media_alias(alias):
            return MediaEngine.for_alias(alias)
        raise ImproperlyConfigured(f"Unknown database alias {alias!r}.")
    settings_dict = connections[alias].settings_dict
    if settings_dict.get("BACKUP_ENGINE"):
        # An explicit engine class for this alias (a dotted path in its DATABASES entry): lets a
        # deployment plug in its own engine, and tests plug in fault-injecting ones.
        engine_class = import_string(settings_dict["BACKUP_ENGINE"])
        if not (isinstance(engine_class, type) and issubclass(engine_class, DumpEngine)):
            raise ImproperlyConfigured(f"BACKUP_ENGINE of {alias!r} is not a DumpEngine subclass.")
        return engine_class(alias, settings_dict)
    try:
        dotted_path = ENGINES[settings_dict["ENGINE"]]
    except KeyError:
        raise ImproperlyConfigured(
            f"Database {alias!r} uses {settings_dict['ENGINE']}, which opsdesk cannot back up."
        ) from None
    return import_string(dotted_path)(alias, settings_dict)
