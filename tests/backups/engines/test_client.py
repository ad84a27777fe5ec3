"""The password file of the client-tool engines (backups_app/engines/client.py)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

from backups_app.engines.client import private_file

PROJECT_ROOT = Path(__file__).resolve().parents[3]

CHILD = """
import sys, time
from backups_app.engines.client import private_file
with private_file(sys.argv[1], prefix="opsdesk-test-") as path:
    print(path, flush=True)
    time.sleep(60)
"""


def test_password_file_is_private_and_removed(tmp_path):
    with private_file("s3cret", prefix="opsdesk-test-") as path:
        assert Path(path).read_text() == "s3cret"
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
        target = os.readlink(path) if Path(path).is_symlink() else path
    assert not Path(path).exists() or os.readlink(path) != target


def test_password_file_leaves_nothing_on_disk_after_kill_9(tmp_path):
    """docs/FAULTS.md killed-backup and password-in-ps together.

    No finally runs after SIGKILL, yet no secret stays behind.
    """
    secret = f"kill-nine-{uuid.uuid4().hex}"
    environment = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(PROJECT_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, secret], stdout=subprocess.PIPE, env=environment, cwd=PROJECT_ROOT,
    )
    try:
        path = Path(child.stdout.readline().decode().strip())
        assert secret in path.read_text()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert not path.exists()
    assert not [item for item in tmp_path.rglob("*") if item.is_file() and secret in item.read_text(errors="replace")]
