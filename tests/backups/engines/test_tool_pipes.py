"""The pipes to and from a client tool, and the version probes run before every dump."""
from __future__ import annotations

import subprocess
import sys

import pytest

from backups_app.engines import process as process_module
from backups_app.engines.client import _VersionProbe, first_line, tool_output
from backups_app.engines.process import PIPE_CAPACITY_BYTES, enlarge_pipe, run_tool

fcntl = pytest.importorskip("fcntl")
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", None)
needs_pipe_sizes = pytest.mark.skipif(F_GETPIPE_SZ is None, reason="no F_GETPIPE_SZ on this platform")


@needs_pipe_sizes
def test_a_dump_tool_writes_into_a_large_pipe():
    # mariadb-dump writes in small pieces: with the default 64 KiB pipe it stalls whenever the
    # reader is not on a CPU; with 1 MiB it runs ahead the way it does writing to a file.
    with run_tool([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'x' * 300000)"]) as process:
        capacity = fcntl.fcntl(process.stdout.fileno(), F_GETPIPE_SZ)
        assert process.stdout.read() == b"x" * 300000
    assert capacity >= PIPE_CAPACITY_BYTES


@needs_pipe_sizes
def test_a_restore_tool_reads_from_a_large_pipe():
    argv = [sys.executable, "-c", "import sys; assert len(sys.stdin.buffer.read()) == 500000"]
    with run_tool(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as process:
        assert fcntl.fcntl(process.stdin.fileno(), F_GETPIPE_SZ) >= PIPE_CAPACITY_BYTES
        process.stdin.write(b"y" * 500000)


def test_a_refused_pipe_size_is_no_error(tmp_path):
    # Not a pipe at all (EBADF/EINVAL), like a system whose pipe-max-size is lower than asked.
    with open(tmp_path / "file", "wb") as handle:
        assert enlarge_pipe(handle.fileno()) is None


def test_without_f_setpipe_sz_the_default_pipe_is_kept(monkeypatch):
    monkeypatch.setattr(process_module, "fcntl", None)
    with run_tool([sys.executable, "-c", "print('ok')"]) as process:
        assert process.stdout.read().strip() == b"ok"


def test_version_probe_gives_what_tool_output_gives():
    assert first_line(_VersionProbe(sys.executable).output()) == first_line(tool_output(sys.executable, "--version"))
    assert first_line(_VersionProbe(sys.executable).output()).startswith("Python ")


def test_version_probe_of_a_tool_that_cannot_run_is_empty(tmp_path):
    not_executable = tmp_path / "mariadb-dump"
    not_executable.write_text("#!/bin/sh\necho 1\n")
    assert _VersionProbe(str(not_executable)).output() == ""
    assert _VersionProbe(str(tmp_path / "missing")).output() == ""
