"""Regenerate the tables of docs/steps.md from the stage declarations (steps/stages.py).

`python -m steps.docs docs/steps.md` rewrites every block between its `BEGIN generated` and
`END generated` markers; `--check` only says whether the file is current (exit 1 if not).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steps.cli import StepError, run
from steps.contract import OneLineParser, fill_generated, generated_blocks
from steps.stages import DOCUMENTED, WORKFLOW_PARAMETERS


def build_parser() -> argparse.ArgumentParser:
    """The `python -m steps.docs` command line."""
    parser = OneLineParser(prog="python -m steps.docs", description=__doc__)
    parser.add_argument("path", type=Path, help="the Markdown file, e.g. docs/steps.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, compare) the generated blocks of the given Markdown file.

    Returns 0, or 1 with one `error:` line for a stale file (--check), a file without the
    markers or one that cannot be read or written; 2 for a bad flag (steps.cli.run).
    """

    def body() -> int:
        args = build_parser().parse_args(argv)
        text = args.path.read_text()
        try:
            current = fill_generated(text, generated_blocks(DOCUMENTED, WORKFLOW_PARAMETERS))
        except ValueError as exc:
            raise StepError(f"{args.path}: {exc}") from None
        if args.check:
            if current != text:
                raise StepError(f"{args.path} is stale: run `make docs`")
            return 0
        if current != text:
            args.path.write_text(current)
            print(f"updated {args.path}")
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
