"""mistcore is shared with the desktop patcher: it must import neither Django nor the server's apps."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
FORBIDDEN = ("django", "rest_framework", "django_q", "accounts", "catalog", "builds", "deltas", "downloads", "mist")


def test_no_server_imports_in_source() -> None:
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.relative_to(PACKAGE)} imports {name}"


def test_importing_everything_loads_no_django() -> None:
    code = (
        "import sys, mistcore.delta, mistcore.indirect, mistcore.journal, mistcore.engines.rdiff_worker; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
