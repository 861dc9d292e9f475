"""The patcher's layering: no Django or server code anywhere, Qt only in jobs/ and ui/, core below all."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
SERVER = ("django", "rest_framework", "rest_framework_simplejwt", "django_q", "accounts", "catalog", "builds",
          "deltas", "downloads", "mist")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "tests" not in p.relative_to(PACKAGE).parts]


def test_no_server_code_is_imported() -> None:
    for path in sources():
        bad = {m for m in imported_modules(path) if m.split(".")[0] in SERVER}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_qt_only_in_jobs_and_ui() -> None:
    for path in sources():
        layer = path.relative_to(PACKAGE).parts[0]
        qt = {m for m in imported_modules(path) if m.split(".")[0] in ("PySide6", "shiboken6")}
        if layer not in ("jobs", "ui"):
            assert not qt, f"{path.relative_to(PACKAGE)} imports Qt ({sorted(qt)})"


def test_core_imports_no_upper_layer() -> None:
    for path in (PACKAGE / "core").rglob("*.py"):
        upper = {m for m in imported_modules(path)
                 if m.startswith(("mist_patcher.cli", "mist_patcher.ui", "mist_patcher.jobs"))}
        assert not upper, f"{path.relative_to(PACKAGE)} imports {sorted(upper)}"
