"""Admin registrations of backups_app, one module per model family."""
from . import audit, backups, schedules  # noqa: F401  (admin area: backups, restores, audit log, schedules)
from . import tokens  # noqa: F401  (api area: API tokens, shown once, stored hashed)
from . import retention  # noqa: F401  (retention area: retention policies with a deletion preview)
