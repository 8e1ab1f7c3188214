"""check-parameters stage: refuse a bad workflow parameter before any other stage runs.

`python -m steps check-parameters --<parameter> VALUE ...` checks each value with the flags of
every stage that takes it (steps/stages.py); the workflow runs it first, the local runner makes
the same check before it starts.
"""

from __future__ import annotations

import json
import os

from steps.cli import run
from steps.contract import check_workflow_parameters
from steps.stages import CHECK_PARAMETERS, WORKFLOW_PARAMETERS


def main(argv: list[str] | None = None) -> int:
    """CLI: check the given parameters (an empty value counts: Argo passes empty fields as '')."""

    def body() -> None:
        # The raw strings, not `parse`: an empty value must reach the check, not become "unset".
        namespace = CHECK_PARAMETERS.parser().parse_args(argv)
        values = {}
        for flag in CHECK_PARAMETERS.flags:
            raw = getattr(namespace, flag.dest)
            if raw is None and flag.env:
                raw = os.environ.get(flag.env)
            if raw is not None:
                values[flag.name] = raw
        check_workflow_parameters(values, WORKFLOW_PARAMETERS)
        print(json.dumps({"checked": sorted(values)}))

    return run(body)
