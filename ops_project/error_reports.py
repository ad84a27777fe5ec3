"""What Django's error pages and 500 e-mails may show of settings, the environment and local variables.

Django's SafeExceptionReporterFilter hides names containing API, AUTH, TOKEN, KEY, SECRET, PASS...
but opsdesk's connection URLs carry their passwords inside the value: `DATABASE_URL_CHAT`,
`REDIS_URL`, `CELERY_BROKER_URL`, `EMAIL_URL` (in request.META under runserver, which copies the
whole environment there, and in settings). So those names are hidden too, and any other string that
looks like `scheme://user:password@host` has its password masked wherever it appears; local
variables are hidden by the same name rule as settings.
(docs/FAULTS.md: secret-in-errors.)
"""
from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")


def mask_url_passwords(text: str, substitute: str) -> str:
    """`redis://:pw@host` -> `redis://:********@host`; text without credentials is unchanged."""
    return _URL_PASSWORD.sub(lambda match: f"{match.group('head')}{substitute}@", text)


class OpsExceptionReporterFilter(SafeExceptionReporterFilter):
    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|DATABASE_URL|REDIS_URL|BROKER_URL|EMAIL_URL|DSN",
        flags=re.IGNORECASE,
    )

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if type(cleansed) is str:  # not isinstance: lazy objects pass for their wrapped class
            return mask_url_passwords(cleansed, self.cleansed_substitute)
        return cleansed

    def get_traceback_frame_variables(self, request, tb_frame):
        # Django hides locals only inside @sensitive_variables; a local called `password` or
        # `secrets` is hidden everywhere here.
        return [
            (name, self.cleansed_substitute if self.hidden_settings.search(name) else value)
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]

    def cleanse_special_types(self, request, value):
        cleansed = super().cleanse_special_types(request, value)
        if type(cleansed) is str:  # not isinstance: lazy objects pass for their wrapped class
            return mask_url_passwords(cleansed, self.cleansed_substitute)
        return cleansed
