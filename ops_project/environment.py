"""The one `Env` settings.py reads the environment through, with errors an operator can act on.

django-environ raises whatever the cast raises (`invalid literal for int()`, a KeyError on a URL
without a scheme, or nothing at all for `foo://x`, which then fails somewhere else). Here every bad
value becomes one ImproperlyConfigured naming the variable and what it should hold, never the value
itself: a URL may carry a password. manage.py prints that line alone (docs/FAULTS.md: bad-setting).
"""
from __future__ import annotations

import warnings

import environ
from django.core.exceptions import ImproperlyConfigured

_KINDS = {int: "a whole number", float: "a number", bool: "true or false"}


class SettingError(ImproperlyConfigured):
    """A setting's value is unusable; the message names the setting, not its value."""


class SettingsEnv(environ.Env):
    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ImproperlyConfigured:
            raise
        except (ValueError, TypeError, AttributeError):
            kind = _KINDS.get(cast, "a valid value")
            raise SettingError(f"{var} must be {kind}.") from None

    def db_url(self, var=environ.Env.DEFAULT_DATABASE_ENV, default=environ.Env.NOTSET, engine=None):
        expected = f"{var} must be a database URL such as mysql://user@host:3306/name or sqlite:///path."
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Engine not recognized": reported below instead
                config = super().db_url(var, default=default, engine=engine)
        except SettingError:
            raise
        except ImproperlyConfigured:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise SettingError(expected) from None
        if config.get("ENGINE") not in set(self.DB_SCHEMES.values()) or not config.get("NAME"):
            raise SettingError(expected)
        return config

    def email_url(self, var=environ.Env.DEFAULT_EMAIL_ENV, default=environ.Env.NOTSET, backend=None):
        try:
            return super().email_url(var, default=default, backend=backend)
        except ImproperlyConfigured:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise SettingError(f"{var} must be a mail URL such as smtp+tls://user@host:587.") from None

    # environ.Env's short names point at its own methods: point them at these.
    db = db_url
    email = email_url
