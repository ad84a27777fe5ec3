"""opsdesk's secrets: ``from secrets_app import get_secret``.

Importing this package is cheap and needs no app registry: settings.py uses it while it loads.
"""
from secrets_app.manager import default_manager, secrets_actor, secrets_configure

#: ``get_secret(name, default=...)`` -> str. See secrets_app.manager.SecretManager.get.
get_secret = default_manager.get

__all__ = ["default_manager", "get_secret", "secrets_actor", "secrets_configure"]
