"""Imports flow one way: accounts, catalog -> builds -> deltas -> downloads; mistcore and the
patcher import neither Django nor the server apps. Walks the source with ast, so it is cheap."""

from __future__ import annotations

import ast
from pathlib import Path

BASE = Path(__file__).resolve().parents[2]
LEVEL = {"accounts": 0, "catalog": 0, "builds": 1, "deltas": 2, "downloads": 3}
SERVER_ONLY = {*LEVEL, "mist", "django", "rest_framework", "rest_framework_simplejwt", "django_q", "drf_spectacular"}


def _imports(package: str) -> dict[str, set[str]]:
    """For each module file of a package: the top-level packages it imports (anywhere in the file)."""
    found: dict[str, set[str]] = {}
    for path in (BASE / package).rglob("*.py"):
        if "tests" in path.relative_to(BASE).parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(BASE))] = names
    return found


def test_apps_only_import_downwards() -> None:
    wrong = []
    for app, level in LEVEL.items():
        for module, names in _imports(app).items():
            for name in names & set(LEVEL):
                if name != app and LEVEL[name] > level:
                    wrong.append(f"{module} imports {name} (an app above it)")
    assert wrong == []


def test_no_cycle_between_apps() -> None:
    graph = {app: set() for app in LEVEL}  # type: ignore[var-annotated]
    for app in LEVEL:
        for names in _imports(app).values():
            graph[app] |= (names & set(LEVEL)) - {app}
    for a in graph:
        for b in graph[a]:
            assert a not in graph[b], f"{a} and {b} import each other"


def test_shared_modules_are_django_free() -> None:
    wrong = []
    for package in ("mistcore", "mist_patcher"):
        if not (BASE / package).exists():
            continue
        for module, names in _imports(package).items():
            bad = names & SERVER_ONLY
            if bad:
                wrong.append(f"{module} imports {sorted(bad)}")
    assert wrong == []
