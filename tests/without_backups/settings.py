"""The project without backups_app: secrets_app and cache_app alone, as a host project may install them.

The ops database is a file (OPSDESK_TEST_OPS_DB) of the test's own; Redis comes from
OPSDESK_TEST_REDIS_URL with the key prefix OPSDESK_TEST_CACHE_PREFIX.
"""
import os

from tests.cache.conftest import redis_caches
from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, METRICS_COLLECTORS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "backups_app"]
ROOT_URLCONF = "tests.without_backups.urls"
METRICS_COLLECTORS = [path for path in METRICS_COLLECTORS if not path.startswith("backups_app.")]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["OPSDESK_TEST_OPS_DB"]}}
REDIS_URL = os.environ["OPSDESK_TEST_REDIS_URL"]
CACHES = redis_caches(REDIS_URL, os.environ["OPSDESK_TEST_CACHE_PREFIX"])
RATELIMIT_USE_CACHE = "ratelimit"
HEALTH_TOKEN = "health-token-without-backups-0123456789"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
