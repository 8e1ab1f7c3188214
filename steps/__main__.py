"""`python -m steps <stage> ...`: dispatch to one stage's CLI (stages: steps/stages.py)."""

from __future__ import annotations

import importlib
import sys

from steps.cli import EXIT_BAD_INPUT, one_line
from steps.stages import STAGES


def main(argv: list[str] | None = None) -> int:
    """Run the CLI of the stage named by the first argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: python -m steps {{{','.join(STAGES)}}} [--help] ..."
    if not args:  # bad input: one error line on stderr, as for an unknown stage
        print(f"error: no stage given; {usage}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args[0] in ("-h", "--help"):
        print(usage)
        return 0
    stage, rest = args[0], args[1:]
    if stage not in STAGES:
        shown = one_line(repr(stage if len(stage) <= 60 else stage[:57] + "..."))
        print(f"error: unknown stage {shown}; choose one of {', '.join(STAGES)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    module = importlib.import_module(f"steps.{stage.replace('-', '_')}")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
