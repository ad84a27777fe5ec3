"""Turn REDIS_URL into django-redis cache settings; imported by ops_project/settings.py (no Django).

Accepted forms:
- `redis://[:password@]host:6379/0`, `rediss://...` (TLS; redis-py reads `?ssl_cert_reqs=required`
  and friends from the query string), `unix:///run/redis.sock?db=0`;
- `sentinel://[:password@]host1:26379,host2:26379/<service>/<db>`: Redis Sentinel. The password is
  the one of the Redis servers; `?sentinel_password=...` adds one for the sentinels themselves.
"""
from __future__ import annotations

from urllib.parse import parse_qs, quote, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

SCHEMES = ("redis", "rediss", "unix", "sentinel")


def redis_cache_location(url: str) -> tuple[str, dict]:
    """(LOCATION, extra OPTIONS) of the default cache for `url`; ImproperlyConfigured if unusable."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss://, unix:// or sentinel://.")
    if scheme != "sentinel":
        return url, {}
    netloc_and_path = url.split("://", 1)[1]
    credentials, _, rest = netloc_and_path.rpartition("@")
    hosts, _, path_and_query = rest.partition("/")
    path, _, query = path_and_query.partition("?")
    parts = [part for part in path.split("/") if part]
    if not hosts or not parts:
        raise ImproperlyConfigured("A sentinel REDIS_URL is sentinel://[:password@]host:port[,host:port]/service[/db].")
    sentinels = []
    for host in hosts.split(","):
        parsed = urlsplit(f"//{host}")
        if not parsed.hostname:
            raise ImproperlyConfigured("A sentinel REDIS_URL lists host:port pairs separated by commas.")
        sentinels.append((parsed.hostname, parsed.port or 26379))
    service, database = parts[0], parts[1] if len(parts) > 1 else "0"
    if not database.isdigit():
        raise ImproperlyConfigured("The database of a sentinel REDIS_URL must be a number.")
    options: dict = {
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "SENTINELS": sentinels,
    }
    sentinel_password = parse_qs(query).get("sentinel_password")
    if sentinel_password:
        options["SENTINEL_KWARGS"] = {"password": sentinel_password[0]}
    password = unquote(credentials.partition(":")[2]) if credentials else ""
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{service}/{database}", options


def redis_broker_location(url: str) -> tuple[str, dict]:
    """(Celery broker URL, broker transport options) equivalent to REDIS_URL, for kombu.

    kombu spells Sentinel as `sentinel://:pw@h1:26379/0;sentinel://:pw@h2:26379/0` plus the
    `master_name` transport option; other forms are passed through unchanged.
    """
    if not url.lower().startswith("sentinel://"):
        return url, {}
    location, options = redis_cache_location(url)
    credentials = location.split("://", 1)[1].rpartition("@")[0]
    database = location.rsplit("/", 1)[1]
    service = location.split("://", 1)[1].rpartition("@")[2].split("/", 1)[0]
    auth = f"{credentials}@" if credentials else ""
    broker = ";".join(f"sentinel://{auth}{host}:{port}/{database}" for host, port in options["SENTINELS"])
    transport: dict = {"master_name": service}
    if "SENTINEL_KWARGS" in options:
        transport["sentinel_kwargs"] = options["SENTINEL_KWARGS"]
    return broker, transport
