"""Every string staff see is translated: no .po entry is left empty or fuzzy, and each committed .mo
says what its .po says (a .po edited without compilemessages changes nothing on the pages)."""
import ast
import gettext
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SKIPPED_DIRS = {"node_modules", "var", "__pycache__"}


def find_po_files() -> list[Path]:
    found = []
    for folder, subfolders, files in os.walk(PROJECT_ROOT):
        # .venv (installed packages' catalogs are not ours), .git and the like.
        subfolders[:] = [name for name in subfolders if not name.startswith(".") and name not in SKIPPED_DIRS]
        found.extend(Path(folder) / name for name in files if name.endswith(".po"))
    return sorted(found)


PO_FILES = find_po_files()


def po_id(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def parse_po(path: Path) -> list[dict]:
    """The entries of a .po file: flags and fields (msgid, msgid_plural, msgstr, msgstr[N]).

    Obsolete entries (#~) are left out: gettext ignores them."""
    entries = []
    entry: dict = {"flags": set(), "fields": {}, "line": 0}
    field = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            if entry["fields"]:
                entries.append(entry)
                entry = {"flags": set(), "fields": {}, "line": number}
            field = None
            continue
        if line.startswith("#,"):
            if entry["fields"]:
                entries.append(entry)
                entry = {"flags": set(), "fields": {}, "line": number}
            entry["flags"].update(flag.strip() for flag in line[2:].split(","))
            continue
        if line.startswith("#"):
            continue
        keyword = re.match(r"(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?)\s+(\".*\")$", line)
        if keyword:
            field = keyword.group(1)
            if field in ("msgctxt", "msgid") and "msgid" in entry["fields"]:
                entries.append(entry)
                entry = {"flags": set(), "fields": {}, "line": number}
            if not entry["fields"]:
                entry["line"] = number
            entry["fields"][field] = ast.literal_eval(keyword.group(2))
        elif line.startswith('"') and field:
            entry["fields"][field] += ast.literal_eval(line)
        else:
            raise AssertionError(f"{po_id(path)}:{number}: cannot read {line!r}")
    if entry["fields"]:
        entries.append(entry)
    return entries


def plural_count(entries: list[dict]) -> int:
    header = next(entry for entry in entries if entry["fields"].get("msgid") == "")
    match = re.search(r"nplurals\s*=\s*(\d+)", header["fields"].get("msgstr", ""))
    return int(match.group(1)) if match else 2


def untranslated(path: Path) -> list[str]:
    entries = parse_po(path)
    nplurals = plural_count(entries)
    problems = []
    for entry in entries:
        fields = entry["fields"]
        if fields.get("msgid") == "":
            continue  # the header; makemessages marks it fuzzy, msgfmt compiles it anyway
        where = f"{po_id(path)}:{entry['line']} {fields.get('msgid', '')[:70]!r}"
        if "fuzzy" in entry["flags"]:
            problems.append(f"{where}: fuzzy")
        elif "msgid_plural" in fields:
            if any(not fields.get(f"msgstr[{index}]") for index in range(nplurals)):
                problems.append(f"{where}: a plural form is not translated")
        elif not fields.get("msgstr"):
            problems.append(f"{where}: not translated")
    return problems


def test_every_catalog_is_found():
    names = {po_id(path) for path in PO_FILES}
    for expected in ("backups_app", "secrets_app", "cache_app", "locale/pt_BR", "locale/extra"):
        assert any(name.startswith(expected) for name in names), f"no .po file under {expected}: {sorted(names)}"


@pytest.mark.parametrize("po_file", PO_FILES, ids=po_id)
def test_every_entry_is_translated(po_file):
    problems = untranslated(po_file)
    assert not problems, "translate these (then compilemessages):\n" + "\n".join(problems)


def test_the_reader_sees_untranslated_and_fuzzy_entries(tmp_path):
    po_file = tmp_path / "django.po"
    po_file.write_text(
        'msgid ""\nmsgstr ""\n"Plural-Forms: nplurals=2; plural=(n > 1);\\n"\n\n'
        'msgid "Done"\nmsgstr "Concluído"\n\n'
        'msgid "Empty"\nmsgstr ""\n\n'
        '#, fuzzy, python-format\n#| msgid "Old %(name)s"\nmsgid "New %(name)s"\nmsgstr "Antigo %(name)s"\n\n'
        'msgid "%(n)s file"\nmsgid_plural "%(n)s files"\nmsgstr[0] "%(n)s arquivo"\nmsgstr[1] ""\n\n'
        '#~ msgid "Gone"\n#~ msgstr ""\n',
        encoding="utf-8",
    )
    problems = untranslated(po_file)
    assert len(problems) == 3, problems
    assert "'Empty': not translated" in problems[0]
    assert "'New %(name)s': fuzzy" in problems[1]
    assert "'%(n)s file': a plural form is not translated" in problems[2]


def msgfmt_or_skip() -> str:
    msgfmt = shutil.which("msgfmt")
    if msgfmt is None:
        message = "msgfmt not installed (apt-get install -y gettext): the .mo files cannot be checked"
        if os.environ.get("OPSDESK_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message}; OPSDESK_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    return msgfmt


def load_catalog(mo_file: Path) -> dict:
    with mo_file.open("rb") as handle:
        return dict(gettext.GNUTranslations(handle)._catalog)


@pytest.mark.parametrize("po_file", PO_FILES, ids=po_id)
def test_compiled_catalog_matches_its_po(po_file, tmp_path):
    msgfmt = msgfmt_or_skip()
    committed = po_file.with_suffix(".mo")
    assert committed.exists(), f"{po_id(committed)} is missing: run manage.py compilemessages"
    fresh = tmp_path / "django.mo"
    # --check-format as compilemessages does: a translation that drops a placeholder is refused.
    result = subprocess.run([msgfmt, "--check-format", "-o", str(fresh), str(po_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    expected, actual = load_catalog(fresh), load_catalog(committed)
    stale = sorted(str(key)[:80] for key in expected.keys() | actual.keys() if expected.get(key) != actual.get(key))
    assert not stale, f"{po_id(committed)} differs from its .po (run manage.py compilemessages):\n" + "\n".join(stale)


@pytest.mark.parametrize(("action", "verb"), [("download", "baixar"), ("restore", "restaurar"), ("verify", "verificar")])
def test_a_refused_backup_action_reads_as_a_verb_in_portuguese(action, verb):
    """"restore" is also the Restore model's name; the refusal needs the verb, not "restauração"."""
    from types import SimpleNamespace

    from django.utils import translation

    from backups_app.access import backup_access_check
    from backups_app.exceptions import AccessRefused

    staff = SimpleNamespace(is_superuser=False)
    with translation.override("pt-br"), pytest.raises(AccessRefused) as refused:
        backup_access_check(database="default", user=staff, action=action)
    assert str(refused.value).startswith(f"Só um superusuário pode {verb} um backup de default:"), refused.value
