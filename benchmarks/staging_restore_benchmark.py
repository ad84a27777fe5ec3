"""What the staging database costs a MariaDB restore: staged (atomic) against direct (the old flow).

    .venv/bin/python benchmarks/staging_restore_benchmark.py --rounds 3 [--url mysql://root@127.0.0.1:3306/x]

Builds `opsdesk_bench_staging`, a chat-like database (users, rooms, messages with accented text,
emoji and JSON, a view, a trigger, a function), dumps it once with opsdesk's engine, then restores
that dump alternately:
- direct: what opsdesk did before: drop every object of the target, replay the dump into it;
- staged: `MySQLDumpEngine.restore()`: replay into a staging database, then one RENAME TABLE and
  the schema objects recreated (the "swap window", also timed: the only time the target is
  half-changed).
Prints medians and the ratio staged/direct, then drops the database (and any work database).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import environ  # noqa: E402

from backups_app.engines.client import driver_connection  # noqa: E402
from backups_app.engines import mysql_staging  # noqa: E402
from backups_app.engines.mysql import MySQLDumpEngine  # noqa: E402

DATABASE = "opsdesk_bench_staging"


def execute(engine: MySQLDumpEngine, *statements: str, database=...) -> None:
    with driver_connection(engine.settings_dict, name=database) as connection:
        cursor = connection.cursor()
        for statement in statements:
            cursor.execute(statement)


def build(engine: MySQLDumpEngine, messages: int) -> None:
    execute(engine, f"DROP DATABASE IF EXISTS {DATABASE}",
            f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci", database=None)
    execute(
        engine,
        "CREATE TABLE user (id INT PRIMARY KEY, name VARCHAR(80), email VARCHAR(120), joined DATETIME) ENGINE=InnoDB",
        "INSERT INTO user SELECT seq, CONCAT('Usuário ', seq, ' çãé 🙂'), CONCAT('u', seq, '@example.com'), "
        "NOW() - INTERVAL seq MINUTE FROM seq_1_to_20000",
        "CREATE TABLE room (id INT PRIMARY KEY, name VARCHAR(80)) ENGINE=InnoDB",
        "INSERT INTO room SELECT seq, CONCAT('sala-', seq) FROM seq_1_to_2000",
        "CREATE TABLE message (id BIGINT PRIMARY KEY, room_id INT NOT NULL, user_id INT NOT NULL, body TEXT, "
        "metadata JSON, sent_at DATETIME(6), INDEX (room_id, sent_at), "
        "FOREIGN KEY (room_id) REFERENCES room (id), FOREIGN KEY (user_id) REFERENCES user (id)) ENGINE=InnoDB",
        f"INSERT INTO message SELECT seq, 1 + seq MOD 2000, 1 + seq MOD 20000, "
        f"CONCAT('Olá! mensagem ', seq, ' — ', REPEAT(MD5(seq), 4), ' 👍'), "
        f"JSON_OBJECT('client', 'web', 'seq', seq), NOW(6) - INTERVAL seq SECOND FROM seq_1_to_{messages}",
        "CREATE VIEW room_activity AS SELECT room_id, COUNT(*) AS messages FROM message GROUP BY room_id",
        "CREATE TRIGGER message_default_room BEFORE INSERT ON message FOR EACH ROW "
        "SET NEW.room_id = COALESCE(NEW.room_id, 1)",
        "CREATE FUNCTION room_label(room INT) RETURNS VARCHAR(90) DETERMINISTIC "
        "RETURN (SELECT CONCAT('#', name) FROM room WHERE id = room)",
    )


def restore_direct(engine: MySQLDumpEngine, dump: Path) -> float:
    started = time.perf_counter()
    engine.prepare_restore()
    with dump.open("rb") as stream:
        engine.restore_into(stream, engine.database_name)
    return time.perf_counter() - started


def restore_staged(engine: MySQLDumpEngine, dump: Path) -> tuple[float, float, float]:
    """Total time, swap window (first change of the target to the end of the swap), and the time
    from the first change to the return of restore() (the swap plus dropping the trash database),
    which is how long the services keep the database marked dirty."""
    swap_started: list[float] = []
    swap_ended: list[float] = []
    original_swap_in = mysql_staging.swap_in

    def timed_swap_in(*args, **kwargs):
        original_swap_in(*args, **kwargs)
        swap_ended.append(time.perf_counter())

    mysql_staging.swap_in = timed_swap_in
    try:
        started = time.perf_counter()
        with dump.open("rb") as stream:
            engine.restore(stream, before_target_change=lambda: swap_started.append(time.perf_counter()))
        finished = time.perf_counter()
    finally:
        mysql_staging.swap_in = original_swap_in
    return finished - started, swap_ended[0] - swap_started[0], finished - swap_started[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="mysql://root@127.0.0.1:3306/x", help="server (the database part is ignored)")
    parser.add_argument("--messages", type=int, default=300000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    settings_dict = {**environ.Env.db_url_config(arguments.url), "NAME": DATABASE,
                     "OPTIONS": {"charset": "utf8mb4"}}
    engine = MySQLDumpEngine("bench", settings_dict)
    try:
        build(engine, arguments.messages)
        with tempfile.TemporaryDirectory() as folder:
            dump = Path(folder) / "dump.sql"
            with engine.dump() as stream, dump.open("wb") as output:
                while chunk := stream.read(1 << 20):
                    output.write(chunk)
            direct, staged, windows, marked = [], [], [], []
            for _round in range(arguments.rounds):
                direct.append(restore_direct(engine, dump))
                total, window, dirty = restore_staged(engine, dump)
                staged.append(total)
                windows.append(window)
                marked.append(dirty)
            size_mb = dump.stat().st_size / 1e6
    finally:
        execute(engine, f"DROP DATABASE IF EXISTS {DATABASE}", database=None)
    median_direct, median_staged = statistics.median(direct), statistics.median(staged)
    print(f"dump: {size_mb:.1f} MB, {arguments.messages} messages, {arguments.rounds} rounds (medians)")
    print(f"direct restore (drop objects, replay into the target): {median_direct:.2f} s")
    print(f"staged restore (replay into staging, RENAME, recreate): {median_staged:.2f} s "
          f"({median_staged / median_direct:.2f}x direct)")
    print(f"swap window (target half-changed): {statistics.median(windows) * 1000:.0f} ms; "
          f"marked dirty (swap + dropping the old tables): {statistics.median(marked) * 1000:.0f} ms")
    print("rounds:", ", ".join(f"{d:.2f}/{s:.2f}" for d, s in zip(direct, staged)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
