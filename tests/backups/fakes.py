"""A fault-injecting dump engine: a real subprocess whose behaviour the test chooses.

Plugged in through the DATABASES entry (`BACKUP_ENGINE`), the way a deployment plugs in its own
engine, so the code under test is the real service/pipeline/process code.
  FAKE_SCRIPT    Python source run as the "dump tool" (its stdout is the dump).
  FAKE_RESTORE   a file the restore writes the plain dump into; FAKE_RESTORE_FAIL makes it fail
                 after it began to change the target ("before_touching": before it did).
The restore is not atomic: it calls before_target_change() before it writes the target.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from backups_app.engines.base import DumpEngine
from backups_app.engines.process import run_tool
from backups_app.exceptions import RestoreFailed

MARKER = b"-- Dump completed"

GOOD_SCRIPT = (
    "import sys\n"
    "out = sys.stdout.buffer\n"
    "for i in range(2000):\n"
    "    out.write(b'INSERT INTO t VALUES (%d);\\n' % i)\n"
    "out.write(b'-- Dump completed\\n')\n"
)


class ScriptDumpEngine(DumpEngine):
    vendor = "fake"
    completion_marker = MARKER

    def _argv(self) -> list[str]:
        tool = self.settings_dict.get("FAKE_TOOL")
        return [tool] if tool else [sys.executable, "-c", self.settings_dict.get("FAKE_SCRIPT") or GOOD_SCRIPT]

    @contextmanager
    def dump(self) -> Iterator[BinaryIO]:
        with run_tool(
            self._argv(), timeout=settings.BACKUP_DUMP_TIMEOUT,
            secrets=[self.settings_dict.get("PASSWORD")],
            env={**os.environ, "FAKE_PASSWORD": self.settings_dict.get("PASSWORD") or ""},
        ) as process:
            yield process.stdout

    def restore(self, stream: BinaryIO, *, before_target_change: Callable[[], None] = lambda: None) -> None:
        failure = self.settings_dict.get("FAKE_RESTORE_FAIL")
        if failure and failure != "before_touching":
            before_target_change()
        if failure:
            stream.read(10)
            raise RestoreFailed("fake restore tool exited with status 1: ERROR at line 1")
        before_target_change()
        with open(self.settings_dict["FAKE_RESTORE"], "wb") as target:
            while chunk := stream.read(1 << 16):
                target.write(chunk)
                target.flush()
                time.sleep(float(self.settings_dict.get("FAKE_RESTORE_SLEEP") or 0))

    def tool_versions(self) -> dict[str, str]:
        return {"fake-dump": "1.0"}

    def table_row_counts(self) -> dict[str, int]:
        return {"t": 2000}


def restored_bytes(settings_dict: dict) -> bytes:
    return Path(settings_dict["FAKE_RESTORE"]).read_bytes()
