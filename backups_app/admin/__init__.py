"""Admin registrations of backups_app, one module per model family."""
from . import audit, backups, schedules  # noqa: F401  (admin area: backups, restores, audit log, schedules)
from . import retention  # noqa: F401  (retention area: retention policies with a deletion preview)
