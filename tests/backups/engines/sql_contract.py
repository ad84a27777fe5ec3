"""The cases every client-tool engine (MySQL, PostgreSQL) must pass, run against the real servers.

A subclass provides the engine under test and knows its database family: how to fill a database
with hard data, how to take a snapshot that covers data and schema objects, how to change it after
a backup, which dump tool to wrap and what a hostile dump looks like. Compare Django's
tests/sessions_tests/tests.py SessionTestsMixin.
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from backups_app.engines.client import ClientToolEngine
from backups_app.exceptions import DumpFailed, RestoreFailed


def dump_bytes(engine: ClientToolEngine) -> bytes:
    with engine.dump() as stream:
        return stream.read()


def write_tool(folder: Path, name: str, body: str, real_tool: str) -> Path:
    """A wrapper script standing in for a client tool; --version/--help go to the real one."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text(
        "#!/bin/sh\n"
        f'REAL="{real_tool}"\n'
        'case "$1" in --version|--help*) exec "$REAL" "$@";; esac\n'
        f"{body}\n"
    )
    script.chmod(0o755)
    return script


def command_lines() -> dict[int, bytes]:
    """Every readable /proc/<pid>/cmdline on the machine, which is what `ps` shows."""
    lines = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue
    return lines


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class SQLEngineContract:
    """Shared cases; subclasses set the class attributes and implement the hooks below."""

    #: Name of the dump tool the engine looks for first, and of the restore client.
    dump_tool_name: str
    restore_tool_name: str

    # --- Hooks ------------------------------------------------------------------------------------

    def populate(self, engine: ClientToolEngine) -> None:
        raise NotImplementedError

    def snapshot(self, engine: ClientToolEngine) -> dict[str, Any]:
        raise NotImplementedError

    def change_after_backup(self, engine: ClientToolEngine) -> None:
        raise NotImplementedError

    def inject_hostile_commands(self, dump: bytes, marker: Path) -> bytes:
        raise NotImplementedError

    def database_exists(self, engine: ClientToolEngine, name: str) -> bool:
        raise NotImplementedError

    #: Key of the bulk table in table_row_counts().
    bulk_table: str

    def add_bulk_row(self, engine: ClientToolEngine) -> None:
        raise NotImplementedError

    def bulk_rows_in(self, dump: bytes) -> int:
        raise NotImplementedError

    def populate_with_odd_name(self, engine: ClientToolEngine) -> None:
        self.populate(engine)

    def create_bulk_rows(self, engine: ClientToolEngine, megabytes: int) -> None:
        """Enough data that the dump tool blocks on a full pipe until it is read."""
        raise NotImplementedError

    def engine_for(self, engine: ClientToolEngine, **overrides: Any) -> ClientToolEngine:
        settings_dict = {**engine.settings_dict, **overrides.pop("settings", {})}
        return type(engine)(engine.alias, settings_dict, bin_dir=overrides.pop("bin_dir", engine.bin_dir),
                            timeout=overrides.pop("timeout", engine.timeout))

    def real_tool(self, engine: ClientToolEngine) -> str:
        return engine.find(engine.dump_tools, DumpFailed)

    def escaped(self, password: str) -> str:
        """The password as the engine writes it into its credentials file."""
        return password

    def dump_processes(self, engine: ClientToolEngine) -> list[int]:
        """Pids of the dump tool running for this engine's database (other tests may run others)."""
        name = engine.database_name.encode()
        found = []
        for pid, line in command_lines().items():
            arguments = line.split(b"\0")
            if Path(arguments[0].decode("utf-8", "replace")).name != self.dump_tool_name:
                continue
            try:
                environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if name in arguments or b"PGDATABASE=" + name in environment:
                found.append(pid)
        return found

    # --- Round trips ------------------------------------------------------------------------------

    def test_round_trip_brings_back_the_exact_state(self, engine):
        self.populate(engine)
        before = self.snapshot(engine)
        dump = dump_bytes(engine)
        assert engine.is_complete(dump[-4096:])

        self.change_after_backup(engine)
        assert self.snapshot(engine) != before

        engine.restore(io.BytesIO(dump))
        assert self.snapshot(engine) == before

    def test_restore_into_a_scratch_database_then_drop_it(self, engine):
        self.populate(engine)
        dump = dump_bytes(engine)
        with engine.scratch_engine() as scratch:
            scratch_name = scratch.database_name
            assert scratch_name.startswith("opsdesk_verify_")
            assert scratch_name != engine.database_name
            assert self.database_exists(engine, scratch_name)
            scratch.restore(io.BytesIO(dump))
            assert scratch.table_row_counts() == engine.table_row_counts()
            assert self.snapshot(scratch) == self.snapshot(engine)
        assert not self.database_exists(engine, scratch_name)

    def test_scratch_database_is_dropped_when_the_verification_fails(self, engine):
        with pytest.raises(ZeroDivisionError), engine.scratch_engine() as scratch:
            scratch_name = scratch.database_name
            1 / 0
        assert not self.database_exists(engine, scratch_name)

    def test_table_row_counts_are_exact(self, engine):
        self.populate(engine)
        counts = engine.table_row_counts()
        assert counts and all(isinstance(value, int) for value in counts.values())
        assert sum(counts.values()) > 0

    def test_row_counts_describe_the_dump_not_later_writes(self, engine):
        self.create_bulk_rows(engine, megabytes=2)
        before = engine.table_row_counts()
        with engine.dump() as stream:
            head = stream.read(64 * 1024)  # the dump is under way, blocked on the full pipe
            self.add_bulk_row(engine)
            dump = head + stream.read()
        assert engine.table_row_counts() == before  # the counts taken beside the dump
        assert engine.table_row_counts() != before  # afterwards: counted afresh
        assert self.bulk_rows_in(dump) == before[self.bulk_table]

    def test_tool_versions_name_the_tools_and_the_server(self, engine):
        versions = engine.tool_versions()
        assert self.dump_tool_name in versions
        assert self.restore_tool_name in versions
        assert versions["server"]

    # --- Failures ---------------------------------------------------------------------------------

    def test_missing_dump_tool_fails_clearly(self, engine, tmp_path):
        empty = tmp_path / "no-tools"
        empty.mkdir()
        crippled = self.engine_for(engine, bin_dir=str(empty))
        with pytest.raises(DumpFailed) as error, crippled.dump():
            pass
        assert self.dump_tool_name in str(error.value)
        assert str(empty) in str(error.value)

    def test_missing_restore_tool_leaves_the_database_untouched(self, engine, tmp_path):
        self.populate(engine)
        before = self.snapshot(engine)
        empty = tmp_path / "no-tools"
        empty.mkdir()
        with pytest.raises(RestoreFailed) as error:
            self.engine_for(engine, bin_dir=str(empty)).restore(io.BytesIO(b"SELECT 1;\n"))
        assert self.restore_tool_name in str(error.value)
        assert self.snapshot(engine) == before

    @pytest.mark.parametrize(
        ("ending", "expected"), [("exit 3", "exited with status 3"), ("kill -9 $$", "SIGKILL")]
    )
    def test_dump_tool_dying_after_its_output_fails(self, engine, tmp_path, ending, expected):
        self.populate(engine)
        folder = tmp_path / "bin"
        write_tool(folder, self.dump_tool_name, f'"$REAL" "$@"\n{ending}', self.real_tool(engine))
        dying = self.engine_for(engine, bin_dir=str(folder))
        with pytest.raises(DumpFailed) as error, dying.dump() as stream:
            stream.read()
        assert expected in str(error.value)

    def test_truncated_dump_exiting_zero_lacks_the_completion_marker(self, engine, tmp_path):
        self.populate(engine)
        folder = tmp_path / "bin"
        write_tool(folder, self.dump_tool_name, '"$REAL" "$@" | head -c 1500\nexit 0', self.real_tool(engine))
        with self.engine_for(engine, bin_dir=str(folder)).dump() as stream:
            dump = stream.read()
        assert 0 < len(dump) <= 1500
        assert not engine.is_complete(dump[-4096:])

    def test_hanging_dump_tool_is_killed_with_its_whole_process_group(self, engine, tmp_path):
        folder = tmp_path / "bin"
        pid_file = tmp_path / "helper.pid"
        write_tool(folder, self.dump_tool_name, f"sleep 300 &\necho $! > {pid_file}\nwait", self.real_tool(engine))
        hanging = self.engine_for(engine, bin_dir=str(folder), timeout=1)
        started = time.monotonic()
        with pytest.raises(DumpFailed) as error, hanging.dump() as stream:
            stream.read()
        assert time.monotonic() - started < 30
        assert "timed out after 1 seconds" in str(error.value)
        helper = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while process_alive(helper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(helper)

    def test_consumer_failure_kills_the_dump_tool(self, engine):
        self.create_bulk_rows(engine, megabytes=2)
        with pytest.raises(OSError, match="disk full"), engine.dump() as stream:
            stream.read(1000)
            (pid,) = self.dump_processes(engine)
            raise OSError("disk full")
        deadline = time.monotonic() + 5
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(pid)

    def test_password_is_never_on_a_command_line(self, engine_with_password):
        engine, password = engine_with_password
        self.create_bulk_rows(engine, megabytes=2)
        with engine.dump() as stream:
            first = stream.read(1000)  # the tool is running, blocked on the full pipe
            assert not [line for line in command_lines().values() if password.encode() in line]
            (pid,) = self.dump_processes(engine)
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not [item for item in environment if password.encode() in item]
            assert not [item for item in environment if item.startswith(b"PGPASSWORD=")]
            credential_files = [
                Path(item.split(b"=", 1)[1].decode()) for item in arguments + environment
                if item.startswith((b"--defaults-extra-file=", b"PGPASSFILE="))
            ]
            assert credential_files
            targets = {}
            for path in credential_files:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600
                assert password in path.read_text() or self.escaped(password) in path.read_text()
                # In memory (memfd) where the platform has it: nothing on a disk to leak.
                targets[path] = os.readlink(path) if path.is_symlink() else str(path)
                assert targets[path].startswith("/memfd:") or not hasattr(os, "memfd_create")
            rest = stream.read()
        assert engine.is_complete((first + rest)[-4096:])
        for path, target in targets.items():
            # Gone: the descriptor is closed (its number may already serve another file).
            assert not path.exists() or (os.readlink(path) if path.is_symlink() else "") != target

    def test_wrong_password_fails_without_revealing_it(self, engine_with_password):
        engine, password = engine_with_password
        wrong = password[::-1] + "-wrong"
        with pytest.raises(DumpFailed) as error, self.engine_for(engine, settings={"PASSWORD": wrong}).dump() as stream:
            stream.read()
        message = str(error.value)
        assert "denied" in message.lower() or "authentication failed" in message.lower()
        assert wrong not in message and password not in message

    def test_the_tools_own_error_wins_when_the_reader_gives_up_first(self, engine_with_password):
        engine, password = engine_with_password
        wrong = self.engine_for(engine, settings={"PASSWORD": password + "x"})
        with pytest.raises(DumpFailed) as error, wrong.dump() as stream:
            if not stream.read():
                raise ValueError("the dump is empty")
        message = str(error.value).lower()
        assert "denied" in message or "authentication failed" in message
        assert isinstance(error.value.__context__, ValueError)

    def test_client_commands_in_a_dump_are_not_executed(self, engine, tmp_path):
        self.populate(engine)
        marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
        hostile = self.inject_hostile_commands(dump_bytes(engine), marker)
        with pytest.raises(RestoreFailed):
            engine.restore(io.BytesIO(hostile))
        assert not marker.exists()

    def test_odd_database_names_are_never_executed(self, odd_engine, tmp_path):
        engine, markers = odd_engine
        self.populate_with_odd_name(engine)
        before = self.snapshot(engine)
        dump = dump_bytes(engine)
        assert engine.is_complete(dump[-4096:])
        self.change_after_backup(engine)
        engine.restore(io.BytesIO(dump))
        assert self.snapshot(engine) == before
        assert not [marker for marker in markers if marker.exists()]


def odd_name(marker: str) -> str:
    """A database name a shell would run: a leading dash, quotes, `;` and `$(...)` (< 64 bytes)."""
    return f"-x';$(touch {marker})\"`;touch {marker}"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("OPSDESK_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{name} is not installed; OPSDESK_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(f"{name} is not installed")
    return path
