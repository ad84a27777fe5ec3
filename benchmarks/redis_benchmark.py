"""Benchmark: cached reads (Django cache API vs raw redis-py vs MariaDB) and /health under gunicorn.

    .venv/bin/python benchmarks/redis_benchmark.py [--reads 5000] [--requests 2000] [--concurrency 8]

Needs the machine's Redis (127.0.0.1:6379) and MariaDB (127.0.0.1:3306, root without password).
Everything stays on loopback; keys use a unique prefix and are deleted afterwards, the MariaDB
scratch database is dropped, gunicorn is stopped. Ratios are against the raw redis-py read (part 1)
and against /health with Redis up (part 2), both measured in this same run.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
REDIS_URL = "redis://127.0.0.1:6379/0"
AGGREGATE_ROWS = 20_000
PAYLOAD = {
    "databases": {f"db{number}": {"last_good_at": "2026-11-28T23:00:00+00:00", "size_bytes": 123456789 + number,
                                  "count": 42, "failed_24h": 0} for number in range(8)},
    "total_bytes": 987654321,
}


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 / 1000, p99 / 1000


def timed(function, count: int) -> list[int]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        function()
        samples.append(time.perf_counter_ns() - started)
    return samples


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configure_django(prefix: str, redis_url: str = REDIS_URL) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django
    from django.conf import settings

    django.setup()
    from tests.cache.conftest import redis_caches

    settings.CACHES = redis_caches(redis_url, prefix)
    dead = redis_caches(f"redis://127.0.0.1:{free_port()}/0", prefix, breaker_seconds=5)
    settings.CACHES["dead-resilient"] = dead["default"]
    settings.CACHES["dead-plain"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": dead["default"]["LOCATION"],
        "KEY_PREFIX": prefix,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5, "IGNORE_EXCEPTIONS": True},
    }
    from django.core.cache import caches

    caches._settings = caches.settings = caches.configure_settings(None)


def bench_reads(count: int) -> None:
    import MySQLdb
    import redis
    from django.core.cache import caches

    prefix = f"opsdesk-bench-{uuid.uuid4().hex[:8]}"
    configure_django(prefix)
    cache = caches["default"]
    raw = redis.Redis.from_url(REDIS_URL)
    raw_key = f"{prefix}:raw:dashboard"
    database = f"opsdesk_b_{uuid.uuid4().hex[:12]}"
    admin = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="")
    try:
        cache.set("dashboard", PAYLOAD, 300)
        raw.set(raw_key, pickle.dumps(PAYLOAD), ex=300)
        cursor = admin.cursor()
        cursor.execute(f"CREATE DATABASE `{database}`")
        cursor.execute(f"CREATE TABLE `{database}`.figures (id INT PRIMARY KEY, body LONGTEXT) ENGINE=InnoDB")
        cursor.execute(f"INSERT INTO `{database}`.figures VALUES (1, %s)", [json.dumps(PAYLOAD)])
        # What the cached figures stand for: an aggregate over the backup history.
        cursor.execute(
            f"CREATE TABLE `{database}`.backups (id INT AUTO_INCREMENT PRIMARY KEY, db VARCHAR(20), "
            "status VARCHAR(20), size BIGINT, created_at DATETIME, INDEX (db, status, created_at)) ENGINE=InnoDB"
        )
        cursor.executemany(
            f"INSERT INTO `{database}`.backups (db, status, size, created_at) VALUES (%s, %s, %s, "
            "NOW() - INTERVAL %s MINUTE)",
            [(f"db{number % 8}", "failed" if number % 13 == 0 else "success", number * 1000, number)
             for number in range(AGGREGATE_ROWS)],
        )
        admin.commit()
        mariadb = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="", db=database)
        maria_cursor = mariadb.cursor()

        def read_mariadb():
            maria_cursor.execute("SELECT body FROM figures WHERE id = 1")
            return json.loads(maria_cursor.fetchone()[0])

        def aggregate_mariadb():
            maria_cursor.execute(
                "SELECT db, MAX(created_at), SUM(size), COUNT(*), SUM(status = 'failed') FROM backups GROUP BY db"
            )
            return maria_cursor.fetchall()

        assert cache.get("dashboard") == PAYLOAD and pickle.loads(raw.get(raw_key)) == PAYLOAD
        assert read_mariadb() == PAYLOAD
        for function in (lambda: cache.get("dashboard"), lambda: raw.get(raw_key), read_mariadb):
            timed(function, min(500, count))  # warm up connections and caches
        rows = [
            ("raw redis-py GET (baseline)", timed(lambda: pickle.loads(raw.get(raw_key)), count)),
            ("Django cache API get()", timed(lambda: cache.get("dashboard"), count)),
            ("MariaDB SELECT by primary key", timed(read_mariadb, count)),
            (f"MariaDB aggregate, {AGGREGATE_ROWS} backup rows", timed(aggregate_mariadb, max(50, count // 20))),
        ]
        # Redis down: the circuit breaker vs django-redis' own IGNORE_EXCEPTIONS (refused connections).
        dead_resilient, dead_plain = caches["dead-resilient"], caches["dead-plain"]
        dead_resilient.get("dashboard")  # the one failure that opens the breaker
        rows.append(("cache get(), Redis down, circuit breaker", timed(lambda: dead_resilient.get("dashboard"), count)))
        rows.append(("cache get(), Redis down, django-redis only", timed(lambda: dead_plain.get("dashboard"), min(count, 2000))))
        mariadb.close()
    finally:
        cache.clear()
        raw.delete(raw_key)
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()
    baseline = percentiles(rows[0][1])[0]
    print(f"\nPart 1: reading a {len(pickle.dumps(PAYLOAD))}-byte dashboard payload, {count} reads each (µs)")
    print(f"{'read':44} {'p50':>9} {'p99':>9} {'p50 ratio':>10}")
    for label, samples in rows:
        p50, p99 = percentiles(samples)
        print(f"{label:44} {p50:9.1f} {p99:9.1f} {p50 / baseline:9.2f}x")


def load_worker(port: int, path: str, requests: int, concurrency: int, max_seconds: float) -> None:
    """Second process: `requests` GETs of `path` with `concurrency` threads, stopped at `max_seconds`."""
    deadline = time.monotonic() + max_seconds
    per_thread = requests // concurrency

    def run(_):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        latencies, statuses = [], {}
        for _ in range(per_thread):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter_ns()
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter_ns() - started)
            statuses[response.status] = statuses.get(response.status, 0) + 1
        connection.close()
        return latencies, statuses

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(run, range(concurrency)))
    elapsed = time.monotonic() - started
    latencies = [value for result in results for value in result[0]]
    statuses: dict = {}
    for _, counts in results:
        for status, number in counts.items():
            statuses[str(status)] = statuses.get(str(status), 0) + number
    print(json.dumps({"count": len(latencies), "seconds": elapsed, "p50_us": percentiles(latencies)[0],
                      "p99_us": percentiles(latencies)[1], "statuses": statuses}))


def start_gunicorn(environment: dict, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "ops_project.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", "4", "--log-level", "warning"],
        cwd=PROJECT_ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            connection.getresponse().read()
            return process, port
        except OSError:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)
    raise RuntimeError("gunicorn did not start")


def bench_health(requests: int, concurrency: int, workers: int) -> None:
    prefix = f"opsdesk-bench-{uuid.uuid4().hex[:8]}"
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        base = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_URL", "REDIS_URL"))}
        base.update(
            DJANGO_SETTINGS_MODULE="ops_project.settings", DEBUG="false", DATABASE_URL=f"sqlite:///{folder}/ops.sqlite3",
            BACKUP_DIR=f"{folder}/backups", CACHE_KEY_PREFIX=prefix, CELERY_BROKER_URL="",
        )
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=PROJECT_ROOT,
                       env=base, check=True, capture_output=True)
        scenarios = [
            ("/health, Redis up (baseline)", {"REDIS_URL": REDIS_URL}),
            ("/health, no Redis configured", {"REDIS_URL": ""}),
            ("/health, Redis down (503)", {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}),
        ]
        for label, extra in scenarios:
            process, port = start_gunicorn({**base, **extra}, workers)
            try:
                worker = subprocess.run(
                    [sys.executable, __file__, "--load-worker", str(port), "/health", str(requests), str(concurrency)],
                    capture_output=True, text=True, timeout=120,
                )
                results[label] = json.loads(worker.stdout)
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
    import redis

    raw = redis.Redis.from_url(REDIS_URL)
    for key in raw.scan_iter(match=f"{prefix}:*"):
        raw.unlink(key)
    baseline = None
    print(f"\nPart 2: GET /health against gunicorn ({workers} workers x 4 threads), {requests} requests, "
          f"{concurrency} concurrent clients in a second process")
    print(f"{'scenario':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7}  statuses")
    for label, result in results.items():
        rate = result["count"] / result["seconds"]
        baseline = baseline or rate
        print(f"{label:32} {rate:8.0f} {result['p50_us'] / 1000:8.2f} {result['p99_us'] / 1000:8.2f} "
              f"{rate / baseline:6.2f}x  {result['statuses']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load-worker":
        port, path, requests, concurrency = sys.argv[2:6]
        load_worker(int(port), path, int(requests), int(concurrency), max_seconds=30)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=5000, help="reads per variant in part 1 (default 5000)")
    parser.add_argument("--requests", type=int, default=2000, help="/health requests per scenario (max 20000)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (max 64)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    arguments = parser.parse_args()
    bench_reads(max(100, min(arguments.reads, 100_000)))
    bench_health(max(100, min(arguments.requests, 20_000)), max(1, min(arguments.concurrency, 64)), arguments.workers)


if __name__ == "__main__":
    main()
