"""Shared CLI plumbing for the steps: env fallbacks, output parameters, one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class StepError(Exception):
    """A failure the user can act on. Its message is printed as one line; the step exits 1."""


def env_default(name: str, default: str | None = None) -> str | None:
    """Default for a flag: the environment variable `name` if set and non-empty, else `default`."""
    value = os.environ.get(name)
    return value if value else default


def add_outputs_dir(parser: argparse.ArgumentParser) -> None:
    """Add `--outputs-dir`, where each output parameter is written to a file named after it.

    Argo reads them with `valueFrom.path`; the local runner does the same.
    """
    parser.add_argument(
        "--outputs-dir",
        type=Path,
        default=env_default("STEP_OUTPUTS_DIR"),
        help="directory to write one file per output parameter (env STEP_OUTPUTS_DIR)",
    )


def write_outputs(outputs_dir: Path | None, outputs: Mapping[str, Any]) -> None:
    """Write each output parameter to `outputs_dir/<name>` and print all of them as one JSON line.

    Booleans are written as `true`/`false` so Argo `when` expressions can compare them.
    """
    rendered = {k: _render(v) for k, v in outputs.items()}
    if outputs_dir is not None:
        outputs_dir.mkdir(parents=True, exist_ok=True)
        for name, value in rendered.items():
            (outputs_dir / name).write_text(value)
    print(json.dumps(rendered, sort_keys=True))


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run(main: Callable[[], int | None]) -> int:
    """Run a step body; turn StepError into `error: <message>` on one stderr line and exit 1."""
    try:
        return main() or 0
    except StepError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 1
