"""`python -m workflows.local_runner TEMPLATE.yaml`: run a rendered WorkflowTemplate file on this
machine, e.g. `out/workflow-template.yaml` from `make render`, after editing it.

For this project's pipeline `python workflows/submit.py --local` is the usual door: it renders the
template itself and starts from `make demo`'s parameters. This command runs any file as it is,
with the template's own defaults unless `-p` overrides them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from steps.cli import BadInput, one_line, run
from steps.contract import OneLineParser, non_empty_path
from steps.files import NotRegularFile, OverBound, read_regular
from workflows.argo_rules import MAX_MANIFEST_BYTES, ArgoRuleError, read_manifests
from workflows.local_runner.backends import BACKENDS
from workflows.local_runner.runner import DEFAULT_CACHE_DIR, caller_deploy_env, run_rendered
from workflows.settings import add_parameter_overrides, parameter_overrides


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m workflows.local_runner`."""
    parser = OneLineParser(
        prog="python -m workflows.local_runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 if every task succeeded or was skipped, 2 for a template or "
        "workflow parameter, run dir or cache dir refused before any task ran (one `error:` line "
        "on stderr), 1 "
        "otherwise. What the runner supports and refuses: docs/local-runner.md.",
    )
    parser.add_argument(
        "template", type=non_empty_path, help="rendered WorkflowTemplate, YAML or JSON"
    )
    add_parameter_overrides(parser)
    parser.add_argument(
        "--run-dir",
        type=non_empty_path,
        help="new or empty run directory (default .demo/runs/<time>)",
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="process", help="process (default) or docker"
    )
    parser.add_argument(
        "--cache-dir",
        type=non_empty_path,
        default=DEFAULT_CACHE_DIR,
        help="the artifact repository of key-only artifacts and the memoization caches, kept "
        f"between runs (default {DEFAULT_CACHE_DIR})",
    )
    return parser


def read_template(path: Path) -> dict:
    """The one resource in a YAML or JSON file, read as Kubernetes reads a manifest
    (`workflows.argo_rules.read_manifests`): at most MAX_MANIFEST_BYTES of a regular file.

    Raises:
        BadInput: unreadable file, not a regular file (a named pipe would wait for ever), larger
            than the apiserver reads, not YAML, a key given twice, or not exactly one mapping
            (exit 2, nothing ran).
    """
    try:
        data = read_regular(path, MAX_MANIFEST_BYTES)
        documents = read_manifests(data.decode())
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path} is not UTF-8 text: byte {exc.start}") from None
    except ArgoRuleError as exc:
        raise BadInput(f"{path} is not YAML Kubernetes reads: {one_line(exc)}") from None
    except (NotRegularFile, OverBound) as exc:  # a named pipe would wait for ever
        raise BadInput(str(exc)) from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise BadInput(f"{path} must hold exactly one resource, the rendered WorkflowTemplate")
    return documents[0]


def main(argv: list[str] | None = None) -> int:
    """Entry point: read the template, run it, return the runner's exit status."""

    def body() -> int:
        args = build_parser().parse_args(argv)  # inside `run`: a bad flag is one error line
        template = read_template(args.template)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        run_dir = args.run_dir or Path(".demo") / "runs" / stamp
        return run_rendered(
            template,
            parameter_overrides(args.parameter),
            run_dir=run_dir,
            backend=args.backend,
            cache_dir=args.cache_dir,
            env=caller_deploy_env(),
        )

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
