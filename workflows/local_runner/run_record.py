"""The record of a local run: each task's result, the progress lines printed as tasks start and
end, and `<run_dir>/run.json` written at the end.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from steps.cli import one_line
from steps.files import write_text_atomically
from steps.redaction import redact, redact_values

RUN_RECORD = "run.json"
# Each task's output streams, in its task directory.
STDOUT_LOG, STDERR_LOG = "stdout.log", "stderr.log"
STDERR_TAIL_LINES = 20
# An output parameter in a progress line is cut at this many characters.
SHOWN_CHARS = 40


@dataclass
class TaskResult:
    """What happened to one DAG task."""

    phase: str = "Pending"  # Succeeded, Failed, Skipped, Omitted; Pending = never reached
    message: str = ""
    attempts: int = 0
    duration_s: float = 0.0
    exit_code: int | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> host path
    # A looping task: one result per item, by node name (`task(index:item)`), in loop order.
    children: dict[str, TaskResult] | None = None
    # A node of a dag template: one result per task of that DAG, by task name (its node is
    # `<this node>.<task>`).
    tasks: dict[str, TaskResult] | None = None
    # A memoized template: Argo's MemoizationStatus (`hit`, `key`, `cacheName`).
    memoization: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The task's entry in run.json."""
        entry: dict[str, Any] = {
            "phase": self.phase,
            "message": self.message,
            "attempts": self.attempts,
            "duration_s": round(self.duration_s, 2),
            "exit_code": self.exit_code,
            "outputs": {"parameters": self.parameters, "artifacts": self.artifacts},
        }
        if self.memoization is not None:
            entry["memoization"] = self.memoization
        if self.children is not None:
            entry["children"] = {name: c.as_json() for name, c in self.children.items()}
        if self.tasks is not None:
            entry["tasks"] = {name: t.as_json() for name, t in self.tasks.items()}
        return entry


@dataclass
class Progress:
    """Progress lines of a run, printed as they happen (`out`); task names padded to `width`.
    The line that says why the run failed goes to `err`."""

    out: TextIO | None = None
    width: int = 4
    err: TextIO | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def say(self, line: str) -> None:
        """Print one line now (default stdout), credentials in URLs redacted: parameter values
        and the steps' stderr tails pass through here. Items of a loop running at once print
        whole lines, never interleaved."""
        with self._lock:
            print(redact(line), file=self.out or sys.stdout, flush=True)

    def failed(self, message: str) -> None:
        """The one `error: <message>` line of a failed run (default stderr), redacted."""
        with self._lock:
            line = f"error: {one_line(message, limit=None)}"
            print(line, file=self.err or sys.stderr, flush=True)

    def started(self, task: str) -> None:
        """A task starts running."""
        self.say(f"  {task:<{self.width}}  Running")

    def ended(self, task: str, result: TaskResult, task_dir: Path) -> None:
        """A task ended: phase, duration, message or outputs (a cache hit says so); a failure
        adds its stderr tail from `task_dir`."""
        outputs = " ".join(f"{k}={one_line(v, SHOWN_CHARS)}" for k, v in result.parameters.items())
        detail = result.message or outputs
        if (result.memoization or {}).get("hit"):
            detail = f"from cache {result.memoization['cacheName']} ({outputs})"
        self.say(f"  {task:<{self.width}}  {result.phase:<9} {result.duration_s:6.1f}s  {detail}")
        if result.phase == "Failed":
            for line in tail(task_dir / STDERR_LOG, STDERR_TAIL_LINES):
                self.say(f"    | {line}")


def write_run_record(
    run_dir: Path,
    workflow: Mapping[str, str],
    parameters: Mapping[str, str],
    backend: str,
    phase: str,
    duration_s: float,
    results: Mapping[str, TaskResult],
    outputs: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Write `<run_dir>/run.json` (name, uid, backend, phase, parameters, tasks, and the
    workflow's `outputs` shaped like Argo's `status.outputs`); return it."""
    summary = {
        "name": workflow["workflow.name"],
        "uid": workflow["workflow.uid"],
        "backend": backend,
        "phase": phase,
        "duration_s": round(duration_s, 2),
        "parameters": dict(parameters),
        "outputs": {"parameters": list(outputs or [])},
        "tasks": {name: result.as_json() for name, result in results.items()},
    }
    text = json.dumps(redact_values(summary), indent=2) + "\n"
    write_text_atomically(run_dir / RUN_RECORD, text)
    return summary


# The most of a log's end read for its last lines: a step may write gigabytes to stderr.
TAIL_MAX_BYTES = 64 * 1024


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log file, read from its last TAIL_MAX_BYTES (none if it does
    not exist)."""
    if not path.exists():
        return []
    with path.open("rb") as log:
        log.seek(max(0, log.seek(0, os.SEEK_END) - TAIL_MAX_BYTES))
        end = log.read(TAIL_MAX_BYTES)
    return end.decode(errors="replace").splitlines()[-lines:]
