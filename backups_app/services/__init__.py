"""Services of backups_app: everything that changes state or touches the outside world.

One module per concern; import services from their module (backups_app.services.backup, ...).
"""
