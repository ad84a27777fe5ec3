"""Admin registrations of backups_app, one module per model family."""
from . import audit, backups, schedules  # noqa: F401  (admin area: backups, restores, audit log, schedules)
