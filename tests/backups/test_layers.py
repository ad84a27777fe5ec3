"""How the backup modules depend on each other: the tasks call the services, never the other way."""
import ast
from pathlib import Path

import backups_app

APP = Path(backups_app.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function (a lazy import is an import)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def test_no_service_imports_the_tasks_module():
    queueing = [*sorted((APP / "services").glob("*.py")), APP / "jobs.py", APP / "storage.py"]
    importers = [path.name for path in queueing if "backups_app.tasks" in imported_modules(path)]
    assert importers == []
