"""Admin registrations of backups_app, one module per model family."""
from backups_app.admin import tokens  # noqa: F401
from . import retention  # noqa: F401  (retention area: retention policies with a deletion preview)
