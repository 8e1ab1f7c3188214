"""Run the kind/*.sh scripts in a sandbox: a copy of kind/ in a temporary repository, and a PATH
whose external programs (kubectl, kind, docker, helm, curl, make, sleep, ...) are fakes that log
every call and answer as a test scripts them. Nothing reaches a real cluster, Docker or network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Never taken from the machine: a test that needs one installs a fake.
EXTERNAL = {"kubectl", "kind", "helm", "docker", "dockerd", "curl", "make", "sleep"}

# A fake program: logs its name and argv as one JSON line, then runs the test's bash body.
_FAKE = """#!/usr/bin/env bash
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$(basename "$0")" "$@" >> {log}
{body}
"""


@dataclass
class Sandbox:
    """A temporary repository with kind/ copied in and a PATH of fakes plus system tools."""

    root: Path
    hidden: set[str] = field(default_factory=lambda: set(EXTERNAL))

    def __post_init__(self) -> None:
        self.repo = self.root / "repo"
        shutil.copytree(
            REPO / "kind", self.repo / "kind", ignore=shutil.ignore_patterns("upstream")
        )
        shutil.copy(REPO / "Makefile", self.repo / "Makefile")
        self.fakes = self.root / "fakes"
        self.system = self.root / "system"
        self.log = self.root / "calls.jsonl"
        self.fakes.mkdir()
        self.system.mkdir()
        self.log.touch()
        self._link_system_tools()

    def _link_system_tools(self) -> None:
        for directory in SYSTEM_DIRS:
            if not os.path.isdir(directory):
                continue
            for entry in os.scandir(directory):
                target = self.system / entry.name
                if entry.name in self.hidden or target.exists() or target.is_symlink():
                    continue
                if os.access(entry.path, os.X_OK) and not entry.is_dir():
                    target.symlink_to(entry.path)

    def fake(self, name: str, body: str = "exit 0") -> None:
        """Install a fake `name` that logs its call, then runs `body` (bash)."""
        path = self.fakes / name
        path.write_text(_FAKE.format(log=self.log, body=body))
        path.chmod(0o755)

    def calls(self, name: str | None = None) -> list[list[str]]:
        """Logged calls, `[program, *args]`, oldest first; only `name`'s when given."""
        calls = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [c for c in calls if name is None or c[0] == name]

    def run(
        self, script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run kind/<script> of the sandbox with only the fakes and system tools on PATH."""
        environ = {
            "PATH": f"{self.fakes}:{self.system}",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            **(env or {}),
        }
        return subprocess.run(
            [str(self.repo / "kind" / script), *args],
            cwd=self.repo,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
