"""Settings for opsdesk.

Every setting is read here, once, through a single django-environ ``Env`` from the process environment
and an optional ``.env`` file at the project root (the environment wins). Without any configuration
the project runs on embedded defaults: SQLite under ``var/``, backups in ``backups/``, an in-memory
cache and Celery tasks run inline. README.md lists every setting with its default.
"""
import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

from ops_project.environment import SettingsEnv

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def _owner_only(path: Path, mode: int) -> None:
    """chmod `path` to `mode` when it is ours: the umask must not decide who reads opsdesk's state."""
    status = path.lstat()
    if status.st_uid == os.getuid() and (status.st_mode & 0o777) != mode:
        path.chmod(mode)


# opsdesk's own state (SQLite database, development key, locks): owner-only whatever the umask.
VAR_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
_owner_only(VAR_DIR, 0o700)

# SettingsEnv: a malformed value stops start-up with one line naming the setting (manage.py).
env = SettingsEnv()
# Secrets: the names the operator really exported, captured before .env is copied into os.environ,
# so that the local secret provider can tell them from .env lines (which rotate_secret rewrites).
_PROCESS_ENVIRONMENT_NAMES = frozenset(os.environ)
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _project_path(value: str) -> Path:
    """Relative paths in settings are relative to the project root, not to the working directory."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else BASE_DIR / path


# --- Core -----------------------------------------------------------------------------------------
OPSDESK_ENV = env.str("OPSDESK_ENV", default="development")
if OPSDESK_ENV not in ("development", "production"):
    raise ImproperlyConfigured("OPSDESK_ENV must be 'development' or 'production'.")
PRODUCTION = OPSDESK_ENV == "production"

DEBUG = env.bool("DEBUG", default=not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when OPSDESK_ENV=production.")


def _development_secret_key() -> str:
    """A per-checkout key kept in var/ (mode 0600) so that sessions survive restarts in development.

    Production never uses it: there SECRET_KEY must be configured.
    """
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(get_random_secret_key())
    return key_file.read_text().strip()


# --- Secrets --------------------------------------------------------------------------------------
# Every secret below is read through secrets_app.get_secret: the process environment and .env by
# default, or AWS Secrets Manager, Vault/OpenBao or Azure Key Vault (docs/SECRETS_MANAGER_GUIDE.md).
from secrets_app import get_secret, secrets_configure  # noqa: E402 - needs only the settings above

SECRETS_PROVIDER = env.str("SECRETS_PROVIDER", default="local")  # local | aws | vault | azure | dotted path
SECRETS_CACHE_TTL = env.int("SECRETS_CACHE_TTL", default=300)  # seconds a value is served from memory
SECRETS_MAX_STALE = env.int("SECRETS_MAX_STALE", default=24 * 3600)  # stale-if-error bound, seconds
SECRETS_RETRY_MAX = env.int("SECRETS_RETRY_MAX", default=60)  # longest back-off between provider retries
SECRETS_TIMEOUT = env.float("SECRETS_TIMEOUT", default=3.0)  # provider connect/read timeout, seconds
# The file the local provider reads after the environment, and rotate_secret rewrites.
SECRETS_ENV_FILE = _project_path(env.str("SECRETS_ENV_FILE", default=".env"))
# Required secrets: secrets_check exits non-zero when one is missing.
SECRETS_REQUIRED = env.list("SECRETS_REQUIRED", default=["SECRET_KEY"] if PRODUCTION else [])
# Per-install HMAC key for the fingerprints staff see in the admin (created 0600 on first use).
SECRETS_FINGERPRINT_KEY_FILE = _project_path(env.str("SECRETS_FINGERPRINT_KEY_FILE", default="var/secrets_fingerprint.key"))
# Rotation broadcast: empty means REDIS_URL; the channel and hash are prefixed (default CACHE_KEY_PREFIX:secrets).
SECRETS_REDIS_URL = env.str("SECRETS_REDIS_URL", default="")
SECRETS_REDIS_PREFIX = env.str("SECRETS_REDIS_PREFIX", default="")
# Least interval between access-log writes per process; hits are aggregated over it (one row per secret).
SECRETS_ACCESS_LOG_FLUSH_SECONDS = env.int("SECRETS_ACCESS_LOG_FLUSH_SECONDS", default=60)
# Non-secret provider options (shown to staff); credentials are passed on, never kept as settings.
SECRETS_AWS_REGION = env.str("AWS_REGION", default=env.str("AWS_DEFAULT_REGION", default=""))
SECRETS_AWS_ENDPOINT_URL = env.str("AWS_ENDPOINT_URL_SECRETS_MANAGER", default=env.str("AWS_ENDPOINT_URL", default=""))
SECRETS_AWS_PREFIX = env.str("SECRETS_AWS_PREFIX", default="")
SECRETS_VAULT_ADDR = env.str("VAULT_ADDR", default="")
SECRETS_VAULT_MOUNT = env.str("SECRETS_VAULT_MOUNT", default="secret")
SECRETS_VAULT_PATH = env.str("SECRETS_VAULT_PATH", default="opsdesk")
SECRETS_AZURE_VAULT_URL = env.str("AZURE_KEY_VAULT_URL", default="")


def _secrets_provider_options() -> dict:
    """Options for the chosen provider. The Vault credentials stay local to this function."""
    if SECRETS_PROVIDER == "aws":
        return {"region": SECRETS_AWS_REGION, "endpoint_url": SECRETS_AWS_ENDPOINT_URL,
                "prefix": SECRETS_AWS_PREFIX, "timeout": SECRETS_TIMEOUT}
    if SECRETS_PROVIDER == "vault":
        from secrets_app.providers.vault import VaultCredentials

        return {"address": SECRETS_VAULT_ADDR, "mount": SECRETS_VAULT_MOUNT, "path": SECRETS_VAULT_PATH,
                "timeout": SECRETS_TIMEOUT, "credentials": VaultCredentials(
                    token=env.str("VAULT_TOKEN", default=""), role_id=env.str("VAULT_ROLE_ID", default=""),
                    secret_id=env.str("VAULT_SECRET_ID", default=""))}
    if SECRETS_PROVIDER == "azure":
        return {"vault_url": SECRETS_AZURE_VAULT_URL, "timeout": SECRETS_TIMEOUT}
    return {}


secrets_configure(
    provider=SECRETS_PROVIDER, provider_options=_secrets_provider_options(), env_file=SECRETS_ENV_FILE,
    process_environment=_PROCESS_ENVIRONMENT_NAMES, ttl=SECRETS_CACHE_TTL, max_stale=SECRETS_MAX_STALE,
    retry_max=SECRETS_RETRY_MAX, fingerprint_key_file=SECRETS_FINGERPRINT_KEY_FILE, required=SECRETS_REQUIRED,
)
SGP_TOKEN = get_secret("SGP_TOKEN", default=None)
GEMINI_API_KEY = get_secret("GEMINI_API_KEY", default=None)

SECRET_KEY = get_secret("SECRET_KEY", default="")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when OPSDESK_ENV=production.")
    SECRET_KEY = _development_secret_key()

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # django.contrib.admin with opsdesk's own site (its name, no "View site"): ops_project/admin.py.
    "ops_project.apps.OpsAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_ratelimit",
    "ops_project.apps.AxesConfig",  # django-axes, its admin section named in words (ops_project/apps.py)
    "rest_framework",
    "drf_spectacular",
    "backups_app",
    "secrets_app",
    "cache_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # LocaleMiddleware that honours an explicit LANGUAGE_CODE (see LANGUAGE_FROM_BROWSER).
    "ops_project.middleware.ConsoleLocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into the lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "ops_project.urls"
WSGI_APPLICATION = "ops_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Databases ------------------------------------------------------------------------------------
# `default` holds opsdesk's own tables. Every DATABASE_URL_<ALIAS> adds a database that can be
# backed up (DATABASE_URL_CHAT=mysql://... gives the alias `chat`); the router keeps opsdesk's
# tables out of those.
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'opsdesk.sqlite3'}"),
}
for _name in sorted(env.ENVIRON):
    if _name.startswith("DATABASE_URL_") and env.str(_name):
        DATABASES[_name.removeprefix("DATABASE_URL_").lower()] = env.db(_name)

# Secrets: DATABASE_PASSWORD (default) and DATABASE_PASSWORD_<ALIAS> override the URL's password,
# so a password can live in the secret provider and the URL stay free of it.
for _alias, _database in DATABASES.items():
    _password = get_secret("DATABASE_PASSWORD" if _alias == "default" else f"DATABASE_PASSWORD_{_alias.upper()}", default=None)
    if _password:
        _database["PASSWORD"] = _password
del _password

for _database in DATABASES.values():
    if _database["ENGINE"] == "django.db.backends.mysql":
        _database.setdefault("OPTIONS", {}).setdefault("charset", "utf8mb4")
    if _database["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets the web process read while a Celery worker writes backup progress.
        _database.setdefault("OPTIONS", {}).setdefault("init_command", "PRAGMA journal_mode=WAL;")
        _database["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
        Path(_database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        if _database["NAME"] != ":memory:" and not str(_database["NAME"]).startswith("file:"):
            # Created 0600 here rather than by SQLite under the umask; -wal/-shm copy its mode.
            os.close(os.open(_database["NAME"], os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
            _owner_only(Path(_database["NAME"]), 0o600)

DATABASE_ROUTERS = ["ops_project.routers.OpsDatabaseRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Language and time ----------------------------------------------------------------------------
LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="en-us")
LANGUAGES = [("en", "English"), ("pt-br", "Português (Brasil)")]
# Each browser's Accept-Language chooses the language, unless LANGUAGE_CODE was set explicitly
# (environment or .env): then everybody gets LANGUAGE_CODE. LANGUAGE_FROM_BROWSER decides either way.
LANGUAGE_FROM_BROWSER = env.bool("LANGUAGE_FROM_BROWSER", default="LANGUAGE_CODE" not in env.ENVIRON)
# locale/: the templates' strings; locale/extra/: ops_project's own and pt-BR of django-axes and
# django-celery-beat, which ship none (apart, so that makemessages never marks them obsolete).
LOCALE_PATHS = [BASE_DIR / "locale", BASE_DIR / "locale" / "extra"]
# One date format in every language, with seconds and the time zone (ops_project/formats/).
FORMAT_MODULE_PATH = ["ops_project.formats"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------------------------
# WhiteNoise serves the admin's static files from the WSGI server itself, so `gunicorn` alone is a
# complete production deployment (no separate web server is needed for /static/).
STATIC_URL = "static/"
STATIC_ROOT = _project_path(env.str("STATIC_ROOT", default="var/static"))
# WhiteNoise warns on every start while the folder is missing (before the first collectstatic).
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = _project_path(env.str("MEDIA_ROOT", default="var/media"))
MEDIA_URL = "media/"

# --- Backups --------------------------------------------------------------------------------------
BACKUP_ENABLED = env.bool("BACKUP_ENABLED", default=True)
# Never under MEDIA_ROOT: backups are only reachable through the permission-checked download views.
BACKUP_DIR = _project_path(env.str("BACKUP_DIR", default="backups"))
BACKUP_COMPRESSION = env.str("BACKUP_COMPRESSION", default="gzip")
if BACKUP_COMPRESSION not in ("gzip", "zstd", "none"):
    raise ImproperlyConfigured("BACKUP_COMPRESSION must be one of gzip, zstd, none.")
# "age": every new backup file is encrypted (backups_app.encryption); keys come through get_secret
# (BACKUP_ENCRYPTION_RECIPIENTS to write, BACKUP_ENCRYPTION_IDENTITY to restore and verify).
BACKUP_ENCRYPTION = env.str("BACKUP_ENCRYPTION", default="").strip().lower()
if BACKUP_ENCRYPTION not in ("", "none", "age"):
    raise ImproperlyConfigured("BACKUP_ENCRYPTION must be age, or empty for none.")
BACKUP_RETENTION_DAYS = env.int("BACKUP_RETENTION_DAYS", default=30)
# Media backups (backup_now --media) are incremental after a full archive; a new full one is made
# after this many incrementals or when the chain's full archive is this many days old (0: always full).
BACKUP_MEDIA_FULL_EVERY = env.int("BACKUP_MEDIA_FULL_EVERY", default=7)
BACKUP_MEDIA_FULL_EVERY_DAYS = env.int("BACKUP_MEDIA_FULL_EVERY_DAYS", default=7)
if BACKUP_MEDIA_FULL_EVERY < 0 or BACKUP_MEDIA_FULL_EVERY_DAYS < 0:
    raise ImproperlyConfigured("BACKUP_MEDIA_FULL_EVERY and BACKUP_MEDIA_FULL_EVERY_DAYS must be 0 or more.")
# The default schedule backs up MEDIA_ROOT daily (and the admin's health table shows it) when this
# is true; by default, when MEDIA_ROOT is set in the environment.
BACKUP_MEDIA_SCHEDULE = env.bool("BACKUP_MEDIA_SCHEDULE", default=bool(env.str("MEDIA_ROOT", default="")))
# Point-in-time recovery: archive_binlogs closes a binlog segment at least this often (seconds);
# it bounds what the offsite copy can lose, the local copy is written event by event.
BINLOG_SEGMENT_SECONDS = env.int("BINLOG_SEGMENT_SECONDS", default=60)
BACKUP_LOCK_DIR = _project_path(env.str("BACKUP_LOCK_DIR", default="var/locks"))
BACKUP_DUMP_TIMEOUT = env.int("BACKUP_DUMP_TIMEOUT", default=6 * 3600)
# Folders holding the client tools (mariadb-dump/mysqldump + mariadb/mysql, pg_dump + psql); empty
# means PATH. Pin them when several versions are installed: pg_dump must not be older than the server.
# Connections a MariaDB/MySQL restore loads the dump with (backups_app/engines/mysql_parallel.py);
# 1 replays it through one `mariadb` client as before.
BACKUP_RESTORE_PARALLELISM = env.int("BACKUP_RESTORE_PARALLELISM", default=max(2, min(os.cpu_count() or 1, 8)))
if BACKUP_RESTORE_PARALLELISM < 1:
    raise ImproperlyConfigured("BACKUP_RESTORE_PARALLELISM must be at least 1.")
BACKUP_MYSQL_BIN_DIR = env.str("BACKUP_MYSQL_BIN_DIR", default="")
BACKUP_POSTGRESQL_BIN_DIR = env.str("BACKUP_POSTGRESQL_BIN_DIR", default="")
# A backup restores only into its own alias, or into a target listed here as SOURCE:TARGET
# (chat:chat_staging,chat:chat_dev). `default` is never a target of another alias' backup.
BACKUP_RESTORE_TARGETS = env.list("BACKUP_RESTORE_TARGETS", default=[])

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    },
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        ),
    },
    "backups": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": BACKUP_DIR,
            "base_url": None,
            "file_permissions_mode": 0o600,
            "directory_permissions_mode": 0o700,
        },
    },
}

# --- REST API (backups_app/api) -------------------------------------------------------------------
# Calls allowed per token in each period; over it the API answers 429 with Retry-After.
BACKUP_API_RATE_LIMIT = env.int("BACKUP_API_RATE_LIMIT", default=60)
BACKUP_API_RATE_LIMIT_PERIOD = env.int("BACKUP_API_RATE_LIMIT_PERIOD", default=60)
# Failed authentications (no token, a bad one) allowed per client address per period; then 429.
BACKUP_API_AUTH_FAILURE_LIMIT = env.int("BACKUP_API_AUTH_FAILURE_LIMIT", default=20)
BACKUP_API_AUTH_FAILURE_PERIOD = env.int("BACKUP_API_AUTH_FAILURE_PERIOD", default=60)
# Records per page of /api/v1/backup/list (a client may ask for up to BACKUP_API_MAX_PAGE_SIZE).
BACKUP_API_PAGE_SIZE = env.int("BACKUP_API_PAGE_SIZE", default=50)
BACKUP_API_MAX_PAGE_SIZE = env.int("BACKUP_API_MAX_PAGE_SIZE", default=500)

# Only Bearer tokens (no session cookies, so no CSRF surface), only JSON, deny by default:
# each view names the permission it needs.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["backups_app.api.authentication.ApiTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["backups_app.api.permissions.IsStaffToken"],
    "DEFAULT_THROTTLE_CLASSES": ["backups_app.api.throttling.ApiTokenRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "backups_app.api.negotiation.JsonFallbackContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "backups_app.api.exceptions.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "opsdesk API",
    "DESCRIPTION": "Backups of the configured databases: create, list, download, restore, clean up.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["backups_app.api.permissions.IsStaffToken"],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "BackupStatusEnum": "backups_app.models.BackupRecord.Status",
        "RestoreStatusEnum": "backups_app.models.RestoreRecord.Status",
    },
}

# --- Retention and offsite copies (S3) -----------------------------------------------------------
# With BACKUP_OFFSITE_BUCKET set, every good backup is also copied to S3 (or an S3-compatible store
# such as MinIO or Ceph through BACKUP_OFFSITE_ENDPOINT_URL). Credentials come from boto3's usual
# chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment, ~/.aws, an instance role),
# never from this file. backups_app builds STORAGES["backups_offsite"] from these settings
# (backups_app/conf.py), with endpoint and region of its own: never django-storages' global ones.
BACKUP_OFFSITE_BUCKET = env.str("BACKUP_OFFSITE_BUCKET", default="")
# Empty means AWS itself; for MinIO/Ceph e.g. https://minio.internal:9000.
BACKUP_OFFSITE_ENDPOINT_URL = env.str("BACKUP_OFFSITE_ENDPOINT_URL", default="")
# Empty lets boto3 pick it from AWS_DEFAULT_REGION or its config.
BACKUP_OFFSITE_REGION_NAME = env.str("BACKUP_OFFSITE_REGION_NAME", default="")
# Key prefix inside the bucket, so that one bucket can hold several installations.
BACKUP_OFFSITE_PREFIX = env.str("BACKUP_OFFSITE_PREFIX", default="opsdesk-backups").strip("/")
# The names of earlier versions (AWS_S3_BUCKET, AWS_S3_ENDPOINT_URL, AWS_S3_REGION_NAME,
# AWS_S3_PREFIX) still work while BACKUP_OFFSITE_BUCKET is unset: they become settings of the same
# name, which backups_app reads with a DeprecationWarning and `manage.py check` reports (W001).
if not BACKUP_OFFSITE_BUCKET and env.str("AWS_S3_BUCKET", default=""):
    for _name in ("AWS_S3_BUCKET", "AWS_S3_ENDPOINT_URL", "AWS_S3_REGION_NAME", "AWS_S3_PREFIX"):
        if _name in env.ENVIRON:
            globals()[_name] = env.str(_name)
# Uploads larger than this go up in parts of this size (S3's minimum part size is 5 MiB).
BACKUP_OFFSITE_CHUNK_MB = env.int("BACKUP_OFFSITE_CHUNK_MB", default=64)
# A failed upload is retried with exponential backoff from this delay, up to this many attempts.
BACKUP_OFFSITE_RETRY_SECONDS = env.int("BACKUP_OFFSITE_RETRY_SECONDS", default=300)
BACKUP_OFFSITE_MAX_ATTEMPTS = env.int("BACKUP_OFFSITE_MAX_ATTEMPTS", default=8)

# --- Redis, cache, sessions and rate limiting (cache_app) -----------------------------------------
# REDIS_URL: redis://[:password@]host:6379/0, rediss:// (TLS), unix://, or
# sentinel://[:password@]host1:26379,host2:26379/<service>/<db>. Empty: in-memory cache per process.
REDIS_URL = env.str("REDIS_URL", default="")
# Every key opsdesk writes starts with this, so "clear application cache" never touches other apps.
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="opsdesk")
# Short socket timeouts bound what a hung Redis can cost a request.
CACHE_SOCKET_CONNECT_TIMEOUT = env.float("CACHE_SOCKET_CONNECT_TIMEOUT", default=0.5)
CACHE_SOCKET_TIMEOUT = env.float("CACHE_SOCKET_TIMEOUT", default=0.5)
# After a Redis failure a process skips Redis this long before probing it again.
CACHE_CIRCUIT_BREAKER_SECONDS = env.float("CACHE_CIRCUIT_BREAKER_SECONDS", default=5.0)
# At most one logged Redis error per process per this many seconds.
CACHE_ERROR_LOG_INTERVAL = env.float("CACHE_ERROR_LOG_INTERVAL", default=60.0)
CACHE_DEFAULT_TIMEOUT = env.int("CACHE_DEFAULT_TIMEOUT", default=300)
_silenced_checks = []
from cache_app.configuration import redis_broker_location, redis_cache_location  # noqa: E402

# The broker default below: REDIS_URL in kombu's spelling (differs for Sentinel).
REDIS_BROKER_URL, REDIS_BROKER_TRANSPORT_OPTIONS = redis_broker_location(REDIS_URL)
if REDIS_URL:
    if not CACHE_KEY_PREFIX:
        raise ImproperlyConfigured("CACHE_KEY_PREFIX must not be empty when REDIS_URL is set.")
    _redis_location, _redis_options = redis_cache_location(REDIS_URL)
    CACHES = {
        "default": {
            "BACKEND": "cache_app.backends.redis.ResilientRedisCache",
            "LOCATION": _redis_location,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "TIMEOUT": CACHE_DEFAULT_TIMEOUT,
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": CACHE_SOCKET_CONNECT_TIMEOUT,
                "SOCKET_TIMEOUT": CACHE_SOCKET_TIMEOUT,
                "COMPRESSOR": "cache_app.backends.redis.LargeValueZlibCompressor",
                "CIRCUIT_BREAKER_SECONDS": CACHE_CIRCUIT_BREAKER_SECONDS,
                "ERROR_LOG_INTERVAL": CACHE_ERROR_LOG_INTERVAL,
                "CONNECTION_POOL_KWARGS": {"health_check_interval": 30},
                **_redis_options,
            },
        },
        # Rate-limit counters: in Redis (shared, persistent); per process while Redis is down.
        "ratelimit": {
            "BACKEND": "cache_app.backends.failover.FailoverCache",
            "LOCATION": "ratelimit",
            "OPTIONS": {"PRIMARY": "default"},
        },
    }
    RATELIMIT_USE_CACHE = "ratelimit"
    # django-ratelimit only knows backends by class name; FailoverCache delegates to django-redis.
    _silenced_checks.append("django_ratelimit.W001")
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "TIMEOUT": CACHE_DEFAULT_TIMEOUT,
        }
    }
    # Without Redis the rate limits are per process on purpose (reported in /health's details):
    # django-ratelimit's "LocMemCache is not shared" error would otherwise stop the project starting.
    RATELIMIT_USE_CACHE = "default"
    _silenced_checks += ["django_ratelimit.E003", "django_ratelimit.W001"]
SILENCED_SYSTEM_CHECKS = [*globals().get("SILENCED_SYSTEM_CHECKS", []), *_silenced_checks]
RATELIMIT_ENABLE = env.bool("RATELIMIT_ENABLE", default=True)
RATELIMIT_CACHE_PREFIX = "ratelimit:"
# cached_db: a Redis outage degrades to database reads and logs nobody out.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
# Admin login brute force (django-axes): AXES_FAILURE_LIMIT failures per username + IP lock that
# pair out for AXES_COOLOFF_MINUTES (429 + Retry-After). Counts live in the database: see
# cache_app/login_lockout.py for why not in Redis.
AUTHENTICATION_BACKENDS = [
    "cache_app.login_lockout.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Axes logs a banner at every start of every command otherwise (noise in cron mails).
AXES_VERBOSE = False
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "cache_app.login_lockout.lockout_response"
# The same client address as the audit log: REMOTE_ADDR, never a forgeable X-Forwarded-For.
AXES_CLIENT_IP_CALLABLE = "backups_app.audit.client_ip"
# Successful logins are not logged by axes (the audit log covers what matters); failures are.
AXES_DISABLE_ACCESS_LOG = True
# /health answers within this many seconds even when a component hangs (checks run in parallel).
HEALTH_CHECK_TIMEOUT = env.float("HEALTH_CHECK_TIMEOUT", default=0.8)
# /health gives anonymous callers its booleans only; `Authorization: Bearer <HEALTH_TOKEN>` (or a
# staff session or API token) also gets the details. A secret: read through get_secret.
HEALTH_TOKEN = get_secret("HEALTH_TOKEN", default="") or ""
# /health's checks and who sees its details, as dotted paths (cache_app.health). Unset: what each
# installed app contributes (its AppConfig's `health_checks` / `health_authenticators`). Empty counts
# as unset: a /health with no checks at all would answer "ok" whatever is down.
HEALTH_CHECKS = env.list("HEALTH_CHECKS", default=None) or None
HEALTH_AUTHENTICATORS = env.list("HEALTH_AUTHENTICATORS", default=None) or None
# Load balancers probe /health over plain HTTP on the private network.
SECURE_REDIRECT_EXEMPT = [r"^health/?$"]

# --- /metrics for Prometheus (cache_app.metrics) --------------------------------------------------
# Scrapers let in without a token: direct connections from these addresses or networks (CIDR).
# The Bearer token is the secret METRICS_TOKEN, read through get_secret at each scrape.
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
for _position, _entry in enumerate(METRICS_ALLOWED_IPS, start=1):
    try:
        ipaddress.ip_network(_entry, strict=False)
    except ValueError:
        # The position, not the value: a malformed setting is reported without echoing it.
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_IPS: entry {_position} is not an IP address or network (e.g. 10.0.0.0/8)."
        ) from None
# A local Prometheus scrapes gunicorn over plain HTTP; a redirect would not protect a token anyway
# (it has been sent by the time the redirect answers).
SECURE_REDIRECT_EXEMPT += [r"^metrics$"]
# Each app contributes its collectors; each computes its figures from the database at scrape time.
METRICS_COLLECTORS = [
    "backups_app.metrics.BackupCollector",
    "backups_app.metrics.ProcessCollector",
    "secrets_app.metrics.SecretsCollector",
    "cache_app.metrics.RedisCollector",
]

# --- Celery ---------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_BROKER_URL)
# Without a broker, tasks run inline in the caller: the embedded default needs no worker.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
# A backup can run for hours; Redis must not hand the same task to a second worker meanwhile.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": BACKUP_DUMP_TIMEOUT + 3600}
if CELERY_BROKER_URL == REDIS_BROKER_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS.update(REDIS_BROKER_TRANSPORT_OPTIONS)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Several installations (or a staging copy) can share one broker: each consumes only its own queue.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="opsdesk")
# Workers started before the broker keep trying instead of exiting (the default changes in Celery 6).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The beat scheduler of backups_app.beat: DatabaseScheduler plus a heartbeat; without a broker it
# starts each due task as a background process instead of sending it to a queue.
CELERY_BEAT_SCHEDULER = "backups_app.beat:OpsdeskScheduler"

# --- Liveness and background jobs (backups_app.liveness, backups_app.jobs) -------------------------
# Workers and the scheduler write a heartbeat this often (seconds); one missing for three intervals
# counts as stopped.
BACKUP_HEARTBEAT_SECONDS = env.int("BACKUP_HEARTBEAT_SECONDS", default=15)
# A backup or restore still queued after this many seconds is shown as waiting for a worker.
BACKUP_QUEUE_WAIT_SECONDS = env.int("BACKUP_QUEUE_WAIT_SECONDS", default=120)
# Without a broker, a backup or restore started from the admin or the API runs in a separate
# `manage.py run_task` process (false: inline in the request, only for tests and debugging).
BACKUP_BACKGROUND_JOBS = env.bool("BACKUP_BACKGROUND_JOBS", default=True)
# Web, worker and scheduler processes give every configured database its default schedule when they
# start (unless staff removed it on purpose).
BACKUP_SCHEDULE_ON_START = env.bool("BACKUP_SCHEDULE_ON_START", default=True)

# --- Mail and alerts ------------------------------------------------------------------------------
ADMINS = [tuple(part.strip() for part in admin.split(":", 1)) for admin in env.list("ADMINS", default=[])]
# EMAIL_URL (smtp://user:password@host:587/?tls=True) expands into the EMAIL_* settings.
globals().update(env.email_url("EMAIL_URL", default="consolemail://"))
SERVER_EMAIL = env.str("SERVER_EMAIL", default="opsdesk@localhost")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default=SERVER_EMAIL)

# --- Admin console and alerts (backups_app.dashboard, backups_app.alerts) ---------------------------
# The newest good backup of a database may be this old before the dashboard turns red and ADMINS
# get an e-mail: a daily schedule plus two hours of slack.
BACKUP_ALERT_AFTER_HOURS = env.int("BACKUP_ALERT_AFTER_HOURS", default=26)
# The admin index's backup summary is cached this long; a finished backup drops it at once.
BACKUP_DASHBOARD_CACHE_SECONDS = env.int("BACKUP_DASHBOARD_CACHE_SECONDS", default=300)

# --- Security -------------------------------------------------------------------------------------
X_FRAME_OPTIONS = "DENY"
# The development 500 page and the 500 e-mail hide connection URLs and the passwords inside them.
DEFAULT_EXCEPTION_REPORTER_FILTER = "ops_project.error_reports.OpsExceptionReporterFilter"
SESSION_COOKIE_HTTPONLY = True
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
        # Only behind a proxy that sets X-Forwarded-Proto itself.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Logging --------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        # Secrets: SDK debug logs print response bodies (secret values); never below WARNING.
        **{name: {"level": "WARNING"} for name in ("botocore", "boto3", "urllib3", "hvac", "azure")},
    },
}
