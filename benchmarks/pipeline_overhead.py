"""How much the backup pipeline costs compared with the shell way, on the same input.

The "dump tool" is `cat` of a generated mysqldump-like file, so the dump itself costs (almost)
nothing and what is measured is the pipeline alone: pipe reading, compression, SHA-256, writing,
fsync and rename, against `cat file | zstd -3 > out` and `cat file | gzip > out`. Runs alternate
(shell, pipeline, shell, ...) so that page cache and CPU frequency treat both alike.

    .venv/bin/python benchmarks/pipeline_overhead.py [--size-mb 500] [--rounds 3]

The whole-product benchmark against MariaDB and django-dbbackup is benchmarks/ (sqlengines area);
this one isolates the part owned by backups_app/pipeline.py. Output: wall-time ratios, output
sizes, and the peak RSS of the Python process.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ops_project.settings")


def make_input(path: Path, size_mb: int) -> None:
    """mysqldump-like text: extended INSERTs with numbers, words, dates and some random bytes."""
    words = ["alpha", "beta", "gamma", "delta", "opsdesk", "backup", "restore", "zoë", "naïve", "日本"]
    rng = random.Random(42)
    target = size_mb << 20
    with open(path, "w", encoding="utf-8") as out:
        out.write("-- MariaDB dump 10.19\n")
        written = 0
        row = 0
        while written < target:
            values = []
            for _ in range(500):
                row += 1
                values.append(
                    f"({row},'{rng.choice(words)} {rng.choice(words)} {rng.randrange(10**9)}',"
                    f"'2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} 12:{rng.randrange(60):02d}:00',"
                    f"{rng.random() * 1000:.4f},0x{rng.randbytes(12).hex()})"
                )
            line = "INSERT INTO `t` VALUES " + ",".join(values) + ";\n"
            out.write(line)
            written += len(line)
        out.write("-- Dump completed on 2024-01-01 00:00:00\n")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: robust when the machine is shared."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


CPU: dict[str, list[float]] = {}


def shell(command: str) -> float:
    started = time.perf_counter()
    subprocess.run(["bash", "-c", command], check=True)
    return time.perf_counter() - started


def pipeline(source: Path, folder: Path, compression: str, name: str) -> float:
    from django.core.files.storage import FileSystemStorage

    from backups_app.engines.process import run_tool
    from backups_app.pipeline import stream_to_storage

    storage = FileSystemStorage(location=folder)
    started = time.perf_counter()
    with run_tool(["cat", str(source)]) as process:
        pending = stream_to_storage(
            process.stdout, storage=storage, name=name, compression=compression,
            is_complete=lambda tail: b"-- Dump completed" in tail,
        )
    pending.commit()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import django

    django.setup()
    with tempfile.TemporaryDirectory(prefix="opsdesk-bench-", dir=ROOT / "var" if (ROOT / "var").is_dir() else None) as work:
        work = Path(work)
        source = work / "dump.sql"
        make_input(source, args.size_mb)
        print(f"input: {source.stat().st_size / 2**20:.0f} MiB of SQL text, {os.cpu_count()} CPUs")
        times: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}
        cases = {
            "cat > /dev/null": lambda i: shell(f"cat {source} > /dev/null"),
            "shell | zstd -3": lambda i: shell(f"cat {source} | zstd -3 -q > {work}/shell.zst && sync {work}/shell.zst"),
            "pipeline zstd": lambda i: pipeline(source, work, "zstd", f"p{i}.sql.zst"),
            "shell | gzip": lambda i: shell(f"cat {source} | gzip > {work}/shell.gz && sync {work}/shell.gz"),
            "pipeline gzip": lambda i: pipeline(source, work, "gzip", f"p{i}.sql.gz"),
        }
        for round_number in range(args.rounds):
            for label, run in cases.items():
                cpu_before = cpu_seconds()
                times.setdefault(label, []).append(run(round_number))
                CPU.setdefault(label, []).append(cpu_seconds() - cpu_before)
            sizes = {
                "shell | zstd -3": (work / "shell.zst").stat().st_size,
                "pipeline zstd": (work / f"p{round_number}.sql.zst").stat().st_size,
                "shell | gzip": (work / "shell.gz").stat().st_size,
                "pipeline gzip": (work / f"p{round_number}.sql.gz").stat().st_size,
            }
            for stale in work.glob("p*.sql.*"):
                stale.unlink()
        median = {label: statistics.median(values) for label, values in times.items()}
        cpu = {label: statistics.median(values) for label, values in CPU.items()}
        print(f"load average before: {os.getloadavg()[0]:.1f} (wall times suffer on a shared machine)")
        for label, seconds in median.items():
            size = f"{sizes[label] / 2**20:8.1f} MiB" if label in sizes else " " * 12
            print(f"{label:<18} {seconds:7.2f} s wall {cpu[label]:7.2f} s CPU  {size}")
        for kind, shell_label in (("zstd", "shell | zstd -3"), ("gzip", "shell | gzip")):
            print(f"{kind}: pipeline / shell CPU = {cpu['pipeline ' + kind] / cpu[shell_label]:.3f}")
        print(f"zstd: pipeline / shell = {median['pipeline zstd'] / median['shell | zstd -3']:.3f}"
              f"  (size {sizes['pipeline zstd'] / sizes['shell | zstd -3']:.3f})")
        print(f"gzip: pipeline / shell = {median['pipeline gzip'] / median['shell | gzip']:.3f}"
              f"  (size {sizes['pipeline gzip'] / sizes['shell | gzip']:.3f})")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this Python process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
