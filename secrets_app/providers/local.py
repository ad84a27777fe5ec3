"""The default provider: the process environment, then the project's ``.env`` file.

``NAME_FILE`` pointing at a file (the Docker/Kubernetes secrets convention) is honoured in both
places. Rotation rewrites the ``.env`` line atomically and keeps the file's mode.

settings.py loads ``.env`` into ``os.environ`` at start-up (django-environ), so ``os.environ``
alone cannot tell a value the operator exported from a value copied out of ``.env``. The provider
is given the names that were in the real process environment before that copy; every other name is
read from the file itself, so a rotated ``.env`` line is seen without a restart.
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from secrets_app.exceptions import AccessDenied, ProviderUnavailable, RotationRefused, SecretNotFound
from secrets_app.providers.base import SecretProvider, SecretValue

_LINE = re.compile(r"\A(?:export )?([A-Za-z_0-9]+)=(.*)\Z")


def _unescape_double_quoted(match: re.Match) -> str:
    # Same rule as django-environ's read_env, so both read a line the same way.
    character = match.group(1)
    return "\\" + character if character in "rnt" else character


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse ``.env`` text exactly as django-environ's ``read_env`` does (the first rule wins
    there through setdefault only for the environment; within the file the last line wins)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        key, value = match.group(1), match.group(2)
        single = re.match(r"\A'(.*)'\Z", value)
        if single:
            value = single.group(1)
        double = re.match(r'\A"(.*)"\Z', value)
        if double:
            value = re.sub(r"\\(.)", _unescape_double_quoted, double.group(1))
        values[key] = value
    return values


def format_dotenv_value(value: str) -> str:
    """Quote ``value`` so that ``parse_dotenv`` and django-environ read back the same string."""
    if "'" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _read_secret_file(path: str, secret_name: str) -> str:
    try:
        return Path(path).read_text().rstrip("\r\n")
    except PermissionError as error:
        raise AccessDenied(f"{secret_name}_FILE cannot be read: permission denied.") from error
    except OSError as error:
        raise ProviderUnavailable(f"{secret_name}_FILE cannot be read ({error.strerror}).") from error


class LocalProvider(SecretProvider):
    """Secrets from the process environment, then from the ``.env`` file."""

    name = "local"

    def __init__(
        self,
        *,
        env_file: str | os.PathLike | None = None,
        process_environment: Iterable[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.env_file = Path(env_file) if env_file else None
        # None: every name in os.environ counts as exported by the operator.
        self.process_environment = frozenset(process_environment) if process_environment is not None else None
        self._environ = os.environ if environ is None else environ
        self._parsed: tuple[tuple[int, int, int], dict[str, str]] | None = None
        self._write_lock = threading.Lock()

    def options(self) -> dict[str, Any]:
        return {"env_file": str(self.env_file) if self.env_file else ""}

    def reset(self) -> None:
        self._write_lock = threading.Lock()

    # Reading -------------------------------------------------------------------------------------
    def _exported(self, key: str) -> str | None:
        if self.process_environment is not None and key not in self.process_environment:
            return None
        return self._environ.get(key)

    def dotenv_values(self) -> dict[str, str]:
        """The parsed ``.env`` file, re-read only when the file changed (inode, size, mtime)."""
        if self.env_file is None:
            return {}
        try:
            status = self.env_file.stat()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise ProviderUnavailable(f"{self.env_file} cannot be read ({error.strerror}).") from error
        stamp = (status.st_ino, status.st_size, status.st_mtime_ns)
        parsed = self._parsed
        if parsed is None or parsed[0] != stamp:
            try:
                text = self.env_file.read_text()
            except PermissionError as error:
                raise AccessDenied(f"{self.env_file} cannot be read: permission denied.") from error
            except OSError as error:
                raise ProviderUnavailable(f"{self.env_file} cannot be read ({error.strerror}).") from error
            parsed = (stamp, parse_dotenv(text))
            self._parsed = parsed
        return parsed[1]

    def get(self, secret_name: str) -> SecretValue:
        # The exported environment first, then .env (read only when needed: an unreadable .env must
        # not hide a secret the environment holds); in each, NAME itself before NAME_FILE.
        lookups = ((self._exported, "environment"), (lambda name: self.dotenv_values().get(name), ".env"))
        for lookup, source in lookups:
            value = lookup(secret_name)
            if value:
                return SecretValue(value=value, source=source)
            file_path = lookup(f"{secret_name}_FILE")
            if file_path:
                value = _read_secret_file(file_path, secret_name)
                if value:
                    return SecretValue(value=value, source="file")
        sources = ["environment"] + ([str(self.env_file.name)] if self.env_file else [])
        raise SecretNotFound(secret_name, sources)

    def check(self) -> str:
        self.dotenv_values()
        return f"local: environment and {self.env_file or 'no .env file'}"

    # Writing -------------------------------------------------------------------------------------
    def set(self, secret_name: str, value: str) -> str:
        """Rewrite (or append) the ``NAME=`` line of ``.env`` atomically, keeping the file's mode.

        A name exported in the process environment, or given through ``NAME_FILE``, would shadow
        the new line, so rotation is refused for it rather than silently not taking effect.
        """
        if self.env_file is None:
            raise RotationRefused("The local provider has no .env file to write to.")
        if not _LINE.match(f"{secret_name}=x"):
            raise RotationRefused(f"{secret_name!r} is not a valid .env variable name.")
        if self._exported(secret_name) or self._exported(f"{secret_name}_FILE"):
            raise RotationRefused(
                f"{secret_name} is set in the process environment, which overrides .env: "
                "change it where that environment is defined."
            )
        line = f"{secret_name}={format_dotenv_value(value)}"
        with self._write_lock:
            try:
                text = self.env_file.read_text()
                mode = self.env_file.stat().st_mode & 0o7777
            except FileNotFoundError:
                text, mode = "", 0o600
            lines = text.splitlines()
            replaced = False
            for index, existing in enumerate(lines):
                match = _LINE.match(existing)
                if match and match.group(1) == secret_name:
                    # Every earlier definition is replaced too, so no stale line can win.
                    lines[index] = line
                    replaced = True
            if not replaced:
                lines.append(line)
            self.env_file.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=".env.", dir=self.env_file.parent)
            try:
                with os.fdopen(descriptor, "w") as handle:
                    os.fchmod(handle.fileno(), mode)
                    handle.write("\n".join(lines) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.env_file)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        self._parsed = None
        return ""
