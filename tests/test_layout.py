"""The layout's one rule: business logic (steps/) knows no orchestrator; it never imports
workflows/ or Hera, so a step runs and is tested without Argo."""

from __future__ import annotations

import ast
from pathlib import Path

STEPS = Path(__file__).resolve().parent.parent / "steps"
FORBIDDEN = ("workflows", "hera")


def test_steps_never_import_workflows_or_hera():
    found = []
    for path in sorted(STEPS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [
                f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN
            ]
    assert len(list(STEPS.rglob("*.py"))) > 20
    assert found == []
