#!/usr/bin/env python3
"""Backup and restore speed of `manage.py backup_now` against the shell and django-dbbackup.

Run by hand (never in the test suite), from the project root, with MariaDB on 127.0.0.1:3306:

    .venv/bin/python benchmarks/backup_benchmark.py [--rounds 3] [--target-mb 500]

It builds a chat-like MariaDB database whose dump is at least --target-mb (users, conversations,
messages with text and emoji), then runs the variants side by side, alternating, --rounds times:

    dump-only      mariadb-dump > /dev/null                  the limit: the dump tool alone
    shell-gzip     mariadb-dump | gzip > file                 what a cron line does
    shell-zstd     mariadb-dump | zstd -3 > file
    opsdesk-zstd   manage.py backup_now --compression zstd
    opsdesk-gzip   manage.py backup_now --compression gzip
    dbbackup-gz    django-dbbackup 5.x `dbbackup -z`, from a throwaway venv under benchmarks/work/
    restore-shell  zcat file.gz | mariadb db
    restore-opsdesk manage.py restore_backup NAME --noinput --no-safety-backup (parallel loader,
                   BACKUP_RESTORE_PARALLELISM at its default)
    restore-opsdesk-1  the same with BACKUP_RESTORE_PARALLELISM=1 (one mariadb client)
    restore-myloader   myloader -t 2 of a compressed mydumper copy in 250k-row chunks (made once,
                   untimed, before the rounds), when mydumper is installed

With --postgresql it also builds a PostgreSQL database of the same shape and times, alternating,
`zcat file | psql --single-transaction` against `manage.py restore_backup` (pg-restore-*).

Every variant uses the same mariadb-dump options as opsdesk's engine, so only the plumbing differs.
For each run it measures wall time, output size and peak memory: the peak of the summed RSS of the
whole process tree (sampled every 20 ms from /proc) and the largest single process (rusage).
It prints medians, ratios and the goals, and with --markdown FILE appends the table to that file.
The benchmark database is dropped at the end unless --keep-database.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
WORK = PROJECT / "benchmarks" / "work"
DBBACKUP_VENV = WORK / "dbbackup-venv"
DBBACKUP_PROJECT = WORK / "dbbackup_project"

HOST, PORT, USER = "127.0.0.1", 3306, "root"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
# The options opsdesk's MySQLDumpEngine passes (backups_app/engines/mysql.py), minus the option file.
DUMP_OPTIONS = [
    "--single-transaction", "--skip-lock-tables", "--quick", "--routines", "--triggers", "--events",
    "--hex-blob", "--default-character-set=utf8mb4", "--no-tablespaces", "--max-allowed-packet=1G",
]

WORDS = [
    "olá", "hello", "tudo", "bem", "ok", "obrigado", "amanhã", "reunião", "😀", "👍", "🎉", "❤️",
    "projeto", "deploy", "cliente", "pedido", "pagamento", "entrega", "hoje", "agora", "sim", "não",
    "talvez", "👀", "🔥", "café", "semana", "ligação", "documento", "relatório", "backup", "servidor",
    "the", "meeting", "moved", "to", "3pm", "can", "you", "check", "invoice", "#4521", "please", "🙏",
]


def sql_word() -> str:
    quoted = ", ".join("'" + word.replace("'", "''") + "'" for word in WORDS)
    return f"ELT(1 + FLOOR(RAND() * {len(WORDS)}), {quoted})"


# --- Measuring ------------------------------------------------------------------------------------

def process_tree_rss_kib(root_pid: int) -> int:
    """Summed RSS (KiB) of root_pid and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        rss[pid] = int(fields[21]) * page_kib
    tree = {root_pid}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return sum(rss.get(pid, 0) for pid in tree)


@dataclass
class Run:
    variant: str
    seconds: float
    output_bytes: int | None
    tree_rss_kib: int
    max_process_rss_kib: int


@dataclass
class Result:
    runs: list[Run] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        values = [getattr(run, attribute) for run in self.runs if getattr(run, attribute) is not None]
        return statistics.median(values) if values else float("nan")


def measure(variant: str, argv: list[str], *, env: dict[str, str] | None = None) -> tuple[Run, str]:
    """Run argv, sampling the process tree's RSS; returns the run and the command's stdout."""
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / "stdout.tmp", "w+b") as stdout, open(WORK / "stderr.tmp", "w+b") as stderr:
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env, cwd=PROJECT)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, process_tree_rss_kib(process.pid))
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4 gives this child's rusage, whose ru_maxrss is the largest process of its tree.
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        stop.set()
        sampler.join()
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if process.returncode:
        raise SystemExit(f"{variant} failed ({process.returncode}): {err.decode(errors='replace')[-2000:]}")
    return Run(variant, seconds, None, peak, usage.ru_maxrss), out.decode(errors="replace")


# --- The database ---------------------------------------------------------------------------------

def mariadb(database: str | None, sql: str) -> str:
    argv = ["mariadb", f"--host={HOST}", f"--port={PORT}", f"--user={USER}", "--batch", "--skip-column-names",
            "--default-character-set=utf8mb4"]
    if database:
        argv.append(f"--database={database}")
    completed = subprocess.run(argv, input=sql.encode(), capture_output=True)
    if completed.returncode:
        raise SystemExit(f"mariadb failed: {completed.stderr.decode(errors='replace')}")
    return completed.stdout.decode().strip()


def build_database(name: str, target_mb: int) -> None:
    print(f"building {name} (dump >= {target_mb} MB) ...", flush=True)
    mariadb(None, f"DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}` "
                  "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;")
    word = sql_word()
    names = "'Ana','João','Zoë','Li','Mårten','Ngozi','Ольга','Søren','Aiko','Željko'"
    mariadb(name, f"""
        SET SESSION sql_log_bin = 0;
        CREATE TABLE users (
            id INT UNSIGNED PRIMARY KEY, username VARCHAR(64) NOT NULL UNIQUE, email VARCHAR(255) NOT NULL,
            display_name VARCHAR(128) NOT NULL, created_at DATETIME(6) NOT NULL
        ) ENGINE=InnoDB;
        INSERT INTO users SELECT seq, CONCAT('user', seq), CONCAT('user', seq, '@example.com'),
            CONCAT(ELT(1 + seq % 10, {names}), ' ', ELT(1 + seq % 5, '😀', '🚀', '', '🌻', '')),
            TIMESTAMP('2023-01-01') + INTERVAL seq MINUTE FROM seq_1_to_50000;
        CREATE TABLE conversations (
            id INT UNSIGNED PRIMARY KEY, title VARCHAR(200) NOT NULL, created_by INT UNSIGNED NOT NULL,
            created_at DATETIME(6) NOT NULL, KEY (created_by)
        ) ENGINE=InnoDB;
        INSERT INTO conversations SELECT seq, CONCAT_WS(' ', {word}, {word}, {word}),
            1 + FLOOR(RAND() * 50000), TIMESTAMP('2023-06-01') + INTERVAL seq MINUTE FROM seq_1_to_200000;
        CREATE TABLE messages (
            id BIGINT UNSIGNED PRIMARY KEY, conversation_id INT UNSIGNED NOT NULL,
            sender_id INT UNSIGNED NOT NULL, body TEXT NOT NULL, metadata JSON NULL,
            created_at DATETIME(6) NOT NULL, KEY (conversation_id, created_at)
        ) ENGINE=InnoDB;
    """)
    short = ", ".join([word] * 6)
    long = ", ".join([word] * 14)
    batch = 250_000
    first = 1
    while True:
        last = first + batch - 1
        mariadb(name, f"""
            SET SESSION sql_log_bin = 0;
            INSERT INTO messages SELECT seq, 1 + FLOOR(RAND() * 200000), 1 + FLOOR(RAND() * 50000),
                IF(RAND() < 0.6, CONCAT_WS(' ', {short}), CONCAT_WS(' ', {long})),
                IF(RAND() < 0.2, JSON_OBJECT('reactions', JSON_ARRAY({word}, {word}), 'edited', RAND() < 0.5), NULL),
                TIMESTAMP('2024-01-01') + INTERVAL seq SECOND + INTERVAL FLOOR(RAND() * 1000000) MICROSECOND
            FROM seq_{first}_to_{last};
        """)
        # A dumped row is its text plus ~60 bytes of ids, date, quotes and commas.
        estimate = int(mariadb(name, "SELECT SUM(LENGTH(body) + IFNULL(LENGTH(metadata), 4) + 62) FROM messages"))
        print(f"  {last:>9,} messages, about {estimate / 1e6:,.0f} MB of dump", flush=True)
        if estimate >= target_mb * 1_050_000:
            break
        first = last + 1
    mariadb(name, "ANALYZE TABLE users, conversations, messages;")


def psql(database: str, sql: str) -> str:
    argv = ["psql", f"--host={PG_HOST}", f"--port={PG_PORT}", f"--username={PG_USER}", "--no-psqlrc", "--quiet",
            "--tuples-only", "--no-align", "--set=ON_ERROR_STOP=1", f"--dbname={database}"]
    completed = subprocess.run(argv, input=sql.encode(), capture_output=True)
    if completed.returncode:
        raise SystemExit(f"psql failed: {completed.stderr.decode(errors='replace')}")
    return completed.stdout.decode().strip()


def build_postgresql_database(name: str, target_mb: int) -> None:
    """The same three tables in PostgreSQL, from generate_series (COPY-sized rows of the same text)."""
    print(f"building PostgreSQL {name} (dump >= {target_mb} MB) ...", flush=True)
    psql("postgres", f'DROP DATABASE IF EXISTS "{name}"; CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0;')
    words = "ARRAY[" + ", ".join("'" + word.replace("'", "''") + "'" for word in WORDS) + "]"
    pick = f"(w)[1 + floor(random() * {len(WORDS)})::int]"
    psql(name, f"""
        CREATE TABLE users (id int PRIMARY KEY, username varchar(64) NOT NULL UNIQUE, email varchar(255) NOT NULL,
            display_name varchar(128) NOT NULL, created_at timestamp(6) NOT NULL);
        INSERT INTO users SELECT g, 'user' || g, 'user' || g || '@example.com', 'Zoë ' || g,
            timestamp '2023-01-01' + g * interval '1 minute' FROM generate_series(1, 50000) g;
        CREATE TABLE conversations (id int PRIMARY KEY, title varchar(200) NOT NULL, created_by int NOT NULL,
            created_at timestamp(6) NOT NULL);
        CREATE INDEX ON conversations (created_by);
        INSERT INTO conversations SELECT g, concat_ws(' ', {pick}, {pick}, {pick}), 1 + floor(random() * 50000)::int,
            timestamp '2023-06-01' + g * interval '1 minute' FROM generate_series(1, 200000) g, (SELECT {words} AS w) words;
        CREATE TABLE messages (id bigint PRIMARY KEY, conversation_id int NOT NULL, sender_id int NOT NULL,
            body text NOT NULL, metadata jsonb NULL, created_at timestamp(6) NOT NULL);
        CREATE INDEX ON messages (conversation_id, created_at);
    """)
    batch, first = 250_000, 1
    while True:
        last = first + batch - 1
        psql(name, f"""
            INSERT INTO messages SELECT g, 1 + floor(random() * 200000)::int, 1 + floor(random() * 50000)::int,
                concat_ws(' ', {", ".join([pick] * 10)}),
                CASE WHEN random() < 0.2 THEN jsonb_build_object('reactions', jsonb_build_array({pick}, {pick}),
                    'edited', random() < 0.5) END,
                timestamp '2024-01-01' + g * interval '1 second'
            FROM generate_series({first}, {last}) g, (SELECT {words} AS w) words;
        """)
        estimate = int(psql(name, "SELECT sum(length(body) + coalesce(length(metadata::text), 2) + 50) FROM messages"))
        print(f"  {last:>9,} messages, about {estimate / 1e6:,.0f} MB of dump", flush=True)
        if estimate >= target_mb * 1_050_000:
            break
        first = last + 1
    psql(name, "ANALYZE;")


# --- Variants -------------------------------------------------------------------------------------

def dump_argv(database: str) -> list[str]:
    tool = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    return [tool, f"--host={HOST}", f"--port={PORT}", f"--user={USER}", *DUMP_OPTIONS, "--", database]


def shell_pipeline(database: str, compressor: str | None, output: Path) -> list[str]:
    dump = " ".join(f"'{part}'" for part in dump_argv(database))
    if compressor is None:
        return ["bash", "-c", f"set -o pipefail; {dump} > /dev/null"]
    return ["bash", "-c", f"set -o pipefail; {dump} | {compressor} > '{output}'"]


def load_average() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def opsdesk_env(database: str, postgresql_database: str | None = None) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DATABASE_URL")}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    environment.update({
        "DATABASE_URL": f"sqlite:///{WORK / 'opsdesk-bench.sqlite3'}",
        "DATABASE_URL_BENCH": f"mysql://{USER}@{HOST}:{PORT}/{database}",
        **({"DATABASE_URL_BENCHPG": f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{postgresql_database}"}
           if postgresql_database else {}),
        "BACKUP_DIR": str(WORK / "opsdesk-backups"),
        "BACKUP_LOCK_DIR": str(WORK / "locks"),
        "REDIS_URL": "", "CELERY_BROKER_URL": "", "LOG_LEVEL": "WARNING",
    })
    return environment


def write_dbbackup_project(database: str) -> None:
    DBBACKUP_PROJECT.mkdir(parents=True, exist_ok=True)
    (DBBACKUP_PROJECT / "bench_settings.py").write_text(textwrap.dedent(f"""\
        # Minimal settings for django-dbbackup, the peer opsdesk is compared with.
        SECRET_KEY = "benchmark-only"
        INSTALLED_APPS = ["dbbackup"]
        DATABASES = {{"default": {{
            "ENGINE": "django.db.backends.mysql", "NAME": {database!r}, "HOST": {HOST!r},
            "PORT": {PORT}, "USER": {USER!r}, "PASSWORD": "", "OPTIONS": {{"charset": "utf8mb4"}},
        }}}}
        STORAGES = {{"dbbackup": {{
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {{"location": {str(WORK / 'dbbackup-backups')!r}}},
        }}}}
        # Same dump options as the other variants (dbbackup adds --quick itself).
        DBBACKUP_CONNECTORS = {{"default": {{"DUMP_SUFFIX": {" ".join(DUMP_OPTIONS)!r}}}}}
        DBBACKUP_SEND_EMAIL = False
        USE_TZ = True
    """))
    (DBBACKUP_PROJECT / "manage.py").write_text(textwrap.dedent("""\
        import os, sys
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_settings")
        from django.core.management import execute_from_command_line
        execute_from_command_line(sys.argv)
    """))


def ensure_dbbackup_venv() -> bool:
    python = DBBACKUP_VENV / "bin" / "python"
    if not python.exists():
        print("creating the throwaway django-dbbackup venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(DBBACKUP_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "django-dbbackup>=5,<6",
                        "Django>=5.2,<5.3", "mysqlclient>=2.2"], check=True)
    return python.exists()


def newest(folder: Path, pattern: str) -> Path:
    return max(folder.glob(pattern), key=lambda path: path.stat().st_mtime)


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


# --- Main -----------------------------------------------------------------------------------------

def main() -> int:
    global PORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--restore-rounds", type=int, default=None, help="default: --rounds")
    parser.add_argument("--target-mb", type=int, default=500)
    parser.add_argument("--database", default="opsdesk_bench")
    parser.add_argument("--port", type=int, default=PORT, help="MariaDB port (default 3306)")
    parser.add_argument("--reuse-database", action="store_true", help="skip the build if it exists")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--skip-backup", action="store_true", help="only the restores (needs a gzip backup)")
    parser.add_argument("--skip-restore", action="store_true")
    parser.add_argument("--skip-dbbackup", action="store_true")
    parser.add_argument("--postgresql", action="store_true", help="also time PostgreSQL restores")
    parser.add_argument("--pg-target-mb", type=int, default=200)
    parser.add_argument("--markdown", type=Path, help="append the results table to this file")
    parser.add_argument("--variants", help="comma-separated backup variants to run (default: all), e.g. "
                                           "dump-only,shell-gzip,opsdesk-gzip")
    arguments = parser.parse_args()
    PORT = arguments.port
    if arguments.restore_rounds is None:
        arguments.restore_rounds = arguments.rounds
    if arguments.restore_rounds == 0:
        arguments.skip_restore = True  # `--restore-rounds 0` used to mean "as many as --rounds"

    WORK.mkdir(parents=True, exist_ok=True)
    database = arguments.database
    pg_database = f"{database}_pg" if arguments.postgresql else None
    exists = mariadb(None, f"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{database}'")
    if not (arguments.reuse_database and exists == "1"):
        build_database(database, arguments.target_mb)
    if pg_database:
        pg_exists = psql("postgres", f"SELECT count(*) FROM pg_database WHERE datname = '{pg_database}'")
        if not (arguments.reuse_database and pg_exists == "1"):
            build_postgresql_database(pg_database, arguments.pg_target_mb)
    has_dbbackup = not arguments.skip_dbbackup and not arguments.skip_backup and ensure_dbbackup_venv()
    write_dbbackup_project(database)
    environment = opsdesk_env(database, pg_database)
    python = str(PROJECT / ".venv" / "bin" / "python")
    subprocess.run([python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=PROJECT, env=environment, check=True)
    loads = [load_average()]

    results: dict[str, Result] = {}
    outputs = WORK / "outputs"
    variants = {
        "dump-only": lambda: measure("dump-only", shell_pipeline(database, None, outputs / "x")),
        "shell-gzip": lambda: measure("shell-gzip", shell_pipeline(database, "gzip", outputs / "shell.sql.gz")),
        "shell-zstd": lambda: measure("shell-zstd", shell_pipeline(database, "zstd -3 -q", outputs / "shell.sql.zst")),
        "opsdesk-zstd": lambda: measure("opsdesk-zstd", [python, "manage.py", "backup_now", "--database", "bench",
                                                          "--compression", "zstd", "--json"], env=environment),
        "opsdesk-gzip": lambda: measure("opsdesk-gzip", [python, "manage.py", "backup_now", "--database", "bench",
                                                          "--compression", "gzip", "--json"], env=environment),
    }
    if has_dbbackup:
        variants["dbbackup-gz"] = lambda: measure(
            "dbbackup-gz", [str(DBBACKUP_VENV / "bin" / "python"), str(DBBACKUP_PROJECT / "manage.py"),
                            "dbbackup", "-z", "--noinput"],
            env={**os.environ, "PYTHONPATH": str(DBBACKUP_PROJECT)},
        )
    if arguments.variants:
        wanted = [name.strip() for name in arguments.variants.split(",") if name.strip()]
        unknown = sorted(set(wanted) - set(variants))
        if unknown:
            parser.error(f"unknown variants {', '.join(unknown)}; choose from {', '.join(variants)}")
        variants = {name: run for name, run in variants.items() if name in wanted}
    print(f"opsdesk gzip: {gzip_description(python, environment)}", flush=True)

    source = WORK / "restore-source.sql.gz"
    source_record = WORK / "restore-source.json"
    for round_number in range(1, 0 if arguments.skip_backup else arguments.rounds + 1):
        for name, run_variant in variants.items():
            clear(outputs)
            clear(WORK / "opsdesk-backups") if name.startswith("opsdesk") else None
            clear(WORK / "dbbackup-backups") if name == "dbbackup-gz" else None
            run, stdout = run_variant()
            if name in ("shell-gzip", "shell-zstd"):
                run.output_bytes = newest(outputs, "shell.*").stat().st_size
            elif name.startswith("opsdesk"):
                record = json.loads(stdout)
                run.output_bytes = int(record["size_bytes"])
                if name == "opsdesk-gzip":
                    source_record.write_text(json.dumps(record))
                    shutil.copy(WORK / "opsdesk-backups" / record["name"], source)
            elif name == "dbbackup-gz":
                run.output_bytes = newest(WORK / "dbbackup-backups", "*.gz").stat().st_size
            results.setdefault(name, Result()).runs.append(run)
            print(f"round {round_number} {name:<14} {run.seconds:7.2f} s  "
                  f"{(run.output_bytes or 0) / 1e6:8.1f} MB  tree RSS {run.tree_rss_kib / 1024:6.1f} MiB", flush=True)
        print(f"round {round_number} {round_ratios(results, round_number - 1)}  load {load_average()}", flush=True)
    loads.append(load_average())

    if not arguments.skip_restore and source_record.exists():
        run_restores(arguments, database, environment, python, json.loads(source_record.read_text()), results)
        loads.append(load_average())
    if pg_database:
        run_postgresql_restores(arguments, pg_database, environment, python, results)
        loads.append(load_average())

    report = render(results, arguments, database, loads)
    print(report)
    if arguments.markdown:
        with open(arguments.markdown, "a", encoding="utf-8") as handle:
            handle.write(report + "\n")
    if not arguments.keep_database:
        mariadb(None, f"DROP DATABASE IF EXISTS `{database}`")
        print(f"dropped {database}")
        if pg_database:
            psql("postgres", f'DROP DATABASE IF EXISTS "{pg_database}"')
            print(f"dropped {pg_database}")
    return 0


def restore_with_opsdesk(name: str, alias: str, record: dict, source: Path, environment: dict[str, str],
                         python: str) -> Run:
    """`manage.py restore_backup` of the file `source`, registered under its recorded name."""
    clear(WORK / "opsdesk-backups")
    shutil.copy(source, WORK / "opsdesk-backups" / record["name"])
    subprocess.run([python, "manage.py", "sync_backups"], cwd=PROJECT, env=environment, check=True,
                   capture_output=True)
    run, _ = measure(name, [python, "manage.py", "restore_backup", record["name"], "--database", alias,
                            "--noinput", "--no-safety-backup"], env=environment)
    return run


def run_restores(arguments, database: str, environment: dict[str, str], python: str, record: dict,
                 results: dict[str, Result]) -> None:
    source = WORK / "restore-source.sql.gz"
    connection = [f"--host={HOST}", f"--port={PORT}", f"--user={USER}"]
    variants = {
        "restore-shell": lambda: measure("restore-shell", [
            "bash", "-c", f"set -o pipefail; zcat '{source}' | mariadb {' '.join(connection)} --database='{database}'"])[0],
        "restore-opsdesk": lambda: restore_with_opsdesk("restore-opsdesk", "bench", record, source, environment, python),
        "restore-opsdesk-1": lambda: restore_with_opsdesk(
            "restore-opsdesk-1", "bench", record, source, {**environment, "BACKUP_RESTORE_PARALLELISM": "1"}, python),
    }
    mydumper, myloader = shutil.which("mydumper"), shutil.which("myloader")
    if mydumper and myloader:
        copy = WORK / "mydumper"

        def myloader_run() -> Run:
            # The copy is made (untimed) from the database as the first restores left it: the backup's state.
            if not (copy / "metadata").exists():
                print("mydumper copy for myloader (untimed) ...", flush=True)
                subprocess.run([mydumper, *connection, f"--database={database}", f"--outputdir={copy}", "--compress",
                                "--rows=250000", "--threads=2", "--triggers", "--events", "--routines"], check=True)
            return measure("restore-myloader", [myloader, *connection, f"--database={database}",
                                                f"--directory={copy}", "--threads=2", "--overwrite-tables"])[0]

        shutil.rmtree(copy, ignore_errors=True)
        variants["restore-myloader"] = myloader_run
    for round_number in range(1, arguments.restore_rounds + 1):
        for name, run_variant in variants.items():
            run = run_variant()
            results.setdefault(name, Result()).runs.append(run)
            print(f"round {round_number} {name:<18} {run.seconds:7.2f} s  tree RSS "
                  f"{run.tree_rss_kib / 1024:6.1f} MiB  load {load_average()}", flush=True)


def run_postgresql_restores(arguments, pg_database: str, environment: dict[str, str], python: str,
                            results: dict[str, Result]) -> None:
    completed = subprocess.run([python, "manage.py", "backup_now", "--database", "benchpg", "--compression", "gzip",
                                "--json"], cwd=PROJECT, env=environment, check=True, capture_output=True)
    record = json.loads(completed.stdout)
    source = WORK / "pg-restore-source.sql.gz"
    shutil.copy(WORK / "opsdesk-backups" / record["name"], source)
    # What opsdesk's engine does before the dump (drop every schema), then the dump, in one transaction.
    reset = WORK / "pg-reset.sql"
    reset.write_text("DROP SCHEMA public CASCADE; CREATE SCHEMA public;\n")
    shell = (f"set -o pipefail; cat '{reset}' <(zcat '{source}') | psql --host={PG_HOST} --port={PG_PORT} "
             f"--username={PG_USER} --no-psqlrc --quiet --single-transaction --set=ON_ERROR_STOP=1 "
             f"--dbname={pg_database} > /dev/null")
    for round_number in range(1, arguments.restore_rounds + 1):
        for name in ("pg-restore-shell", "pg-restore-opsdesk"):
            if name == "pg-restore-shell":
                run, _ = measure(name, ["bash", "-c", shell])
            else:
                run = restore_with_opsdesk(name, "benchpg", record, source, environment, python)
            results.setdefault(name, Result()).runs.append(run)
            print(f"round {round_number} {name:<18} {run.seconds:7.2f} s  tree RSS "
                  f"{run.tree_rss_kib / 1024:6.1f} MiB  load {load_average()}", flush=True)


def gzip_description(python: str, environment: dict[str, str]) -> str:
    """Which deflate library and level `backup_now --compression gzip` uses, from the pipeline itself."""
    probe = ("from backups_app import pipeline; "
             "print(pipeline.gzip_zlib.__name__, 'level', pipeline.GZIP_LEVEL)")
    completed = subprocess.run([python, "-c", probe], cwd=PROJECT, env=environment, capture_output=True, text=True)
    return completed.stdout.strip() or completed.stderr.strip().splitlines()[-1]


def round_ratios(results: dict[str, Result], index: int) -> str:
    """The gzip and zstd ratios of one round: the variants of a round ran back to back, under one load."""
    def run(name: str) -> Run | None:
        runs = results[name].runs if name in results else []
        return runs[index] if index < len(runs) else None

    parts = []
    for label, numerator, denominator, attribute in (
        ("gzip time / dump-only", "opsdesk-gzip", "dump-only", "seconds"),
        ("gzip size / gzip -6", "opsdesk-gzip", "shell-gzip", "output_bytes"),
        ("zstd time / shell zstd", "opsdesk-zstd", "shell-zstd", "seconds"),
        ("zstd time / dump-only", "opsdesk-zstd", "dump-only", "seconds"),
    ):
        top, bottom = run(numerator), run(denominator)
        if top is None:
            continue
        if bottom is None and attribute == "output_bytes" and denominator in results:
            bottom = results[denominator].runs[-1]  # gzip -6's size is the same every round
        if bottom is not None and getattr(bottom, attribute):
            parts.append(f"{label} {getattr(top, attribute) / getattr(bottom, attribute):.2f}")
    return "  ".join(parts) or "(no ratios: a variant of each pair was not run)"


def per_round_lines(results: dict[str, Result], rounds: int) -> list[str]:
    lines = []
    for index in range(rounds):
        text = round_ratios(results, index)
        if not text.startswith("("):
            lines.append(f"- round {index + 1}: {text}")
    return lines


def render(results: dict[str, Result], arguments: argparse.Namespace, database: str, loads: list[str]) -> str:
    def seconds(name: str) -> float:
        return results[name].median("seconds") if name in results else float("nan")

    def size(name: str) -> float:
        return results[name].median("output_bytes") if name in results else float("nan")

    def rss(name: str) -> float:
        return results[name].median("tree_rss_kib") / 1024 if name in results else float("nan")

    raw = mariadb(None, "SELECT ROUND(SUM(DATA_LENGTH + INDEX_LENGTH) / 1e6) FROM information_schema.TABLES "
                        f"WHERE TABLE_SCHEMA = '{database}'")
    baseline = "dump-only" if "dump-only" in results else "restore-shell"
    lines = [
        f"### {arguments.rounds} alternating backup rounds, {arguments.restore_rounds} restore "
        f"rounds (medians), {os.cpu_count()} CPUs, MariaDB database {raw} MB on disk; load average "
        f"(1/5/15 min) at start and after each part: {'; '.join(loads)}",
        "",
        f"| variant | wall s | vs {baseline} | output MB | peak RSS, process tree MiB | max single process MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        output = result.median("output_bytes")
        single = result.median("max_process_rss_kib")
        lines.append(
            f"| {name} | {result.median('seconds'):.2f} | {result.median('seconds') / seconds(baseline):.2f}x | "
            f"{'' if output != output else f'{output / 1e6:.1f}'} | {result.median('tree_rss_kib') / 1024:.1f} | "
            f"{single / 1024:.1f} |"
        )

    def goal(label: str, value: float, limit: float) -> str:
        verdict = "n/a" if value != value else ("met" if value <= limit else "MISSED")
        return f"| {label} | {value:.2f} | <= {limit:.2f} | {verdict} |"

    def ratio(label: str, value: float) -> str:
        return "" if value != value else f"| {label} | {value:.2f} | | |"

    rows = [
        goal("opsdesk gzip / dump alone (time)", seconds("opsdesk-gzip") / seconds("dump-only"), 1.25),
        goal("opsdesk gzip / shell gzip -6 (size)", size("opsdesk-gzip") / size("shell-gzip"), 1.12),
        goal("opsdesk zstd / shell zstd (time)", seconds("opsdesk-zstd") / seconds("shell-zstd"), 1.10),
        goal("opsdesk zstd / shell zstd (size)", size("opsdesk-zstd") / size("shell-zstd"), 1.00),
        ratio("opsdesk zstd / dump alone (time, stretch goal 1.20)", seconds("opsdesk-zstd") / seconds("dump-only")),
        goal("opsdesk zstd / dbbackup -z (time)", seconds("opsdesk-zstd") / seconds("dbbackup-gz"), 0.50),
        goal("opsdesk gzip / dbbackup -z (time)", seconds("opsdesk-gzip") / seconds("dbbackup-gz"), 0.75),
        goal("opsdesk peak RSS, MiB / 100", max(rss("opsdesk-zstd"), rss("opsdesk-gzip")) / 100, 1.00),
        goal("restore opsdesk / zcat \\| mariadb (time)", seconds("restore-opsdesk") / seconds("restore-shell"), 0.75),
        ratio("restore opsdesk, 1 connection / zcat \\| mariadb", seconds("restore-opsdesk-1") / seconds("restore-shell")),
        ratio("myloader -t 2 / zcat \\| mariadb", seconds("restore-myloader") / seconds("restore-shell")),
        ratio("restore opsdesk / myloader -t 2", seconds("restore-opsdesk") / seconds("restore-myloader")),
        ratio("PostgreSQL: restore opsdesk / zcat \\| psql -1", seconds("pg-restore-opsdesk") / seconds("pg-restore-shell")),
    ]
    lines += ["", "| goal | measured | target | |", "|---|---:|---:|---|", *[row for row in rows if row]]
    rounds = per_round_lines(results, arguments.rounds)
    if rounds:
        lines += ["", "Ratios round by round (each round's variants ran back to back):", "", *rounds]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
