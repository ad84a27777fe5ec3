"""Settings for the test suite: the project's settings on their embedded defaults.

A developer's .env may point at real servers; tests choose their servers themselves (see
tests/conftest.py), so the values that matter are pinned here.
"""
from ops_project.settings import *  # noqa: F403
from ops_project.settings import BASE_DIR

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BASE_DIR / "var" / "test-opsdesk.sqlite3"),
        "TEST": {"NAME": None},  # in memory, so parallel runs never share a file
    }
}
REDIS_URL = ""
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "KEY_PREFIX": "opsdesk-test"}}
RATELIMIT_USE_CACHE = "default"  # the "ratelimit" alias exists only with REDIS_URL
CELERY_BROKER_URL = ""
CELERY_TASK_ALWAYS_EAGER = True
# Jobs run inline in the test process (tests of the background processes turn this on in a child).
BACKUP_BACKGROUND_JOBS = False
# Tests decide themselves when the default schedule is installed.
BACKUP_SCHEDULE_ON_START = False
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
ADMINS = [("Ops", "ops@example.com")]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
LANGUAGE_CODE = "en-us"
LANGUAGE_FROM_BROWSER = True  # the browser tests choose their language through Accept-Language
