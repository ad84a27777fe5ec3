"""Run an engine's restore in this process, stop feeding it half-way and wait to be killed.

Used by test_atomic_restore: the test kills this process with SIGKILL (what an OOM kill or a crash
does to opsdesk) while the restore client is in the middle of the dump, then checks the database.
Arguments: a JSON DATABASES entry, the engine's dotted path, the dump file, the byte to stop at.
"""
from __future__ import annotations

import inspect
import json
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.utils.module_loading import import_string  # noqa: E402


class HalfThenHang:
    """Reads the dump up to `stop_at` bytes, then says so on stdout and never returns."""

    def __init__(self, path: str, stop_at: int) -> None:
        self.handle = open(path, "rb")  # noqa: SIM115 - lives as long as the process
        self.stop_at = stop_at
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        if self.sent >= self.stop_at:
            print("halfway", flush=True)
            time.sleep(3600)
        size = self.stop_at - self.sent if size < 0 else min(size, self.stop_at - self.sent)
        chunk = self.handle.read(size)
        self.sent += len(chunk)
        return chunk


def main() -> None:
    settings_dict, engine_path, dump_path, stop_at = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    engine = import_string(engine_path)("target", settings_dict)
    stream = HalfThenHang(dump_path, stop_at)
    if "before_target_change" in inspect.signature(engine.restore).parameters:
        engine.restore(stream, before_target_change=lambda: print("touching", flush=True))
    else:  # an engine from before the hook (lets the test be run against older code)
        engine.restore(stream)
    print("finished", flush=True)


if __name__ == "__main__":
    main()
