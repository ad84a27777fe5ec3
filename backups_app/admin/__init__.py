"""Admin registrations of backups_app, one module per model family."""
