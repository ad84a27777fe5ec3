"""The hashed lock files that `make setup`/`make test` install from say what requirements*.txt allow.

Editing a requirements file without `make lock` would leave installs on the old pins (or missing a
new package) while the suite still passed on a developer's venv: this test catches it.
"""
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def requirements(path: Path) -> list[Requirement]:
    """The requirements a file names, following `-r` includes."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += requirements(path.parent / line[3:].strip())
        elif line:
            found.append(Requirement(line))
    return found


def pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{name: (version, [hashes])} of a `uv pip compile --generate-hashes` output."""
    text = path.read_text(encoding="utf-8")
    locked = {}
    for match in re.finditer(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)[^\n]*\\\n((?:\s+--hash=sha256:[0-9a-f]{64}\s*\\?\n?)+)", text, re.M):
        locked[canonicalize_name(match.group(1))] = (match.group(2), re.findall(r"sha256:([0-9a-f]{64})", match.group(3)))
    return locked


@pytest.mark.parametrize(("source", "lock"), [("requirements.txt", "requirements.lock"),
                                              ("requirements-test.txt", "requirements-test.lock"),
                                              ("requirements-browser.txt", "requirements-browser.lock")])
def test_every_requirement_is_pinned_with_hashes_within_its_range(source, lock):
    locked = pins(PROJECT_ROOT / lock)
    assert locked, f"{lock} has no pinned package"
    problems = []
    for requirement in requirements(PROJECT_ROOT / source):
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(f"{requirement.name} is not in {lock}")
            continue
        version, hashes = locked[name]
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
        if not hashes:
            problems.append(f"{requirement.name} has no hash")
    assert not problems, "run `make lock UPGRADE=` and commit the .lock files:\n" + "\n".join(problems)
