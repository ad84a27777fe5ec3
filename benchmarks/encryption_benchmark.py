"""What age encryption costs a zstd backup: the real pipeline with and without it, side by side.

The same generated mysqldump-like stream goes through `backups_app.pipeline.stream_to_storage`
(zstd, SHA-256, temporary file, fsync, rename) once with the standard compressor and once with
`EncryptingCompressor` around it (what `BACKUP_ENCRYPTION=age` runs), alternating for every round
so that page cache and CPU frequency treat both alike. Each run is a child process, so its peak RSS
is its own (os.wait4). Goal (issue 13): encrypted at most 1.10x the time and 1.01x the size.

    .venv/bin/python benchmarks/encryption_benchmark.py [--size-mb 400] [--rounds 5]

Output: per-round wall and CPU seconds, sizes, peak RSS, then the median ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ops_project.settings")

from benchmarks.pipeline_overhead import make_input  # noqa: E402 - the same dump-like text generator


def run_once(source: Path, folder: Path, variant: str) -> dict:
    """One backup of `source` through the real pipeline; in the child process."""
    import django

    django.setup()
    from django.core.files.storage import FileSystemStorage

    from backups_app.encryption import EncryptingCompressor, generate_key_pair, parse_recipients
    from backups_app.pipeline import make_compressor, stream_to_storage

    storage = FileSystemStorage(location=folder)
    compressor = make_compressor("zstd")
    if variant == "age":
        # Two recipients, as the guide recommends (the second a break-glass key).
        keys = ",".join(generate_key_pair()[1] for _ in range(2))
        compressor = EncryptingCompressor(compressor, parse_recipients(keys))
    name = f"bench_{variant}.sql.zst" + (".age" if variant == "age" else "")
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    with open(source, "rb") as stream:
        pending = stream_to_storage(stream, storage=storage, name=name, compression="zstd",
                                    is_complete=lambda tail: b"Dump completed" in tail, compressor=compressor)
    pending.commit()
    wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
    size = (folder / name).stat().st_size
    (folder / name).unlink()
    return {"wall": wall, "cpu": cpu, "size": size, "written": pending.result.size_bytes}


def child(source: Path, folder: Path, variant: str) -> dict:
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", variant, "--input", str(source), "--folder", str(folder)],
        stdout=subprocess.PIPE, text=True,
    )
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{variant} run failed")
    result = json.loads(output)
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=["plain", "age"])
    parser.add_argument("--input")
    parser.add_argument("--folder")
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(run_once(Path(arguments.input), Path(arguments.folder), arguments.child)))
        return
    with tempfile.TemporaryDirectory(prefix="encryption-bench-") as scratch:
        source, folder = Path(scratch) / "dump.sql", Path(scratch) / "out"
        folder.mkdir()
        make_input(source, arguments.size_mb)
        print(f"input: {source.stat().st_size / 2**20:.0f} MiB of mysqldump-like text; "
              f"load average before: {os.getloadavg()[0]:.2f}")
        results: dict[str, list[dict]] = {"plain": [], "age": []}
        for number in range(arguments.rounds):
            order = ("plain", "age") if number % 2 == 0 else ("age", "plain")
            for variant in order:
                result = child(source, folder, variant)
                results[variant].append(result)
                print(f"round {number + 1} {variant:5}: {result['wall']:6.2f} s wall, {result['cpu']:6.2f} s CPU, "
                      f"{result['size']:,} bytes, peak RSS {result['peak_rss_mb']:.0f} MiB", flush=True)
        median = {variant: {key: statistics.median(run[key] for run in runs) for key in ("wall", "cpu", "size", "peak_rss_mb")}
                  for variant, runs in results.items()}
        time_ratio = median["age"]["wall"] / median["plain"]["wall"]
        cpu_ratio = median["age"]["cpu"] / median["plain"]["cpu"]
        size_ratio = median["age"]["size"] / median["plain"]["size"]
        print(f"median wall: plain {median['plain']['wall']:.2f} s, age {median['age']['wall']:.2f} s -> "
              f"{time_ratio:.3f}x (goal <= 1.10x) {'OK' if time_ratio <= 1.10 else 'MISSED'}")
        print(f"median CPU:  plain {median['plain']['cpu']:.2f} s, age {median['age']['cpu']:.2f} s -> {cpu_ratio:.3f}x")
        print(f"size: plain {median['plain']['size']:,}, age {median['age']['size']:,} -> "
              f"{size_ratio:.5f}x (goal <= 1.01x) {'OK' if size_ratio <= 1.01 else 'MISSED'}")
        print(f"peak RSS: plain {median['plain']['peak_rss_mb']:.0f} MiB, age {median['age']['peak_rss_mb']:.0f} MiB; "
              f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
