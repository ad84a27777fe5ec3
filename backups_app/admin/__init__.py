"""Admin registrations of backups_app, one module per model family."""
from . import retention  # noqa: F401  (retention area: retention policies with a deletion preview)
