"""Admin registrations of backups_app, one module per model family."""
from backups_app.admin import tokens  # noqa: F401
