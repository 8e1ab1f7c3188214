"""Regenerate the tables of docs/steps.md from the stage declarations (steps/stages.py).

`python -m steps.docs docs/steps.md` rewrites every block between its `BEGIN generated` and
`END generated` markers; `--check` only says whether the file is current (exit 1 if not).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steps.contract import fill_generated, generated_blocks
from steps.stages import DOCUMENTED, WORKFLOW_PARAMETERS


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, compare) the generated blocks of the given Markdown file."""
    parser = argparse.ArgumentParser(prog="python -m steps.docs", description=__doc__)
    parser.add_argument("path", type=Path, help="the Markdown file, e.g. docs/steps.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = args.path.read_text()
    try:
        current = fill_generated(text, generated_blocks(DOCUMENTED, WORKFLOW_PARAMETERS))
    except ValueError as exc:
        print(f"error: {args.path}: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if current != text:
            print(f"error: {args.path} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.path.write_text(current)
        print(f"updated {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
