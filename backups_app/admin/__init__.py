"""Admin registrations of backups_app, one module per model family."""
from . import (  # noqa: F401  (admin area: backups, restores, audit log, schedules)
    audit,
    backups,
    dirty,  # noqa: F401  (databases left dirty by an interrupted restore)
    retention,  # noqa: F401  (retention area: retention policies with a deletion preview)
    schedules,
    tokens,  # noqa: F401  (api area: API tokens, shown once, stored hashed)
)
