"""What checking the restored bytes on the way costs: the restore's reader with and without it.

A restore reads the stored file once through `HashingReader` (SHA-256 and size of the compressed
bytes) inside `DecompressingReader` (stream end, decompressed size, completion marker), instead of
an unchecked `DecompressingReader`. Runs alternate (unchecked, checked, ...) on the same generated
mysqldump-like gzip file; wall time and CPU time (both threads) are compared.

    .venv/bin/python benchmarks/checked_read.py [--rows 2000000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ops_project.settings")

import django  # noqa: E402

django.setup()

from backups_app.pipeline import DecompressingReader, HashingReader  # noqa: E402

MARKER = b"-- Dump completed on 2026-01-01 00:00:00\n"


def read_once(path: Path, *, checked: bool, sha256: str, size: int, raw_size: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    stored = open(path, "rb")  # noqa: SIM115 - closed by the reader
    source = HashingReader(stored, sha256=sha256, size_bytes=size) if checked else stored
    with DecompressingReader(
        source, compression="gzip", raw_size_bytes=raw_size if checked else None,
        is_complete=(lambda tail: tail.endswith(MARKER)) if checked else None,
    ) as reader:
        while reader.read(1 << 20):
            pass
        assert reader.verified
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    plain = b"".join(
        b"INSERT INTO t VALUES (%d,'%s');\n" % (row, os.urandom(8).hex().encode()) for row in range(options.rows)
    ) + MARKER
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dump.sql.gz"
        path.write_bytes(gzip.compress(plain, 6))
        sha256, size = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _round in range(options.rounds):
            for checked in (False, True):
                results[checked].append(read_once(path, checked=checked, sha256=sha256, size=size, raw_size=len(plain)))
    best = {checked: (min(w for w, _c in runs), min(c for _w, c in runs)) for checked, runs in results.items()}
    print(f"dump {len(plain) / 1e6:.0f} MB, gzip {size / 1e6:.0f} MB, best of {options.rounds}")
    print(f"unchecked: {best[False][0]:.3f} s wall, {best[False][1]:.3f} s CPU")
    print(f"checked:   {best[True][0]:.3f} s wall, {best[True][1]:.3f} s CPU")
    print(f"ratio checked/unchecked: wall {best[True][0] / best[False][0]:.3f}, CPU {best[True][1] / best[False][1]:.3f}")


if __name__ == "__main__":
    main()
