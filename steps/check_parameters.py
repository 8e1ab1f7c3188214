"""check-parameters stage: refuse a bad workflow parameter before any other stage runs.

`python -m steps check-parameters --<parameter> VALUE ...` checks each value with the flags of
every stage that takes it (steps/stages.py); the workflow runs it first, the local runner makes
the same check before it starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from steps import __version__
from steps.cli import run
from steps.contract import OUTPUTS_DIR
from steps.revision import code_fingerprint
from steps.stages import (
    CHECK_PARAMETERS,
    FETCH,
    VALIDATE,
    WORKFLOW_PARAMETERS,
    check_pipeline_parameters,
)
from steps.year_items import BY_YEAR_SOURCES, data_key, loop_items

# The parameters that decide a year's rows: every one fetch or validate reads, but the years.
DATA_PARAMETERS = tuple(
    p.name
    for p in WORKFLOW_PARAMETERS
    if p.name != "years" and any(stage in (FETCH.name, VALIDATE.name) for stage, _ in p.flags)
)


def canonical_values(values: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The checked `values` of the parameters `names`, each in its first flag's one spelling
    (`Flag.canonical`), so `0100` and `100` rows, or `HTTP://` and `http://`, give one data key.
    Not given: the parameter's default, read the same way."""
    canonical = {}
    for parameter in WORKFLOW_PARAMETERS:
        if parameter.name in names:
            raw = values.get(parameter.name, parameter.default)
            canonical[parameter.name] = parameter.flags[0][1].canonical(raw)
    return canonical


def fan_out_outputs(values: dict[str, str], code_version: str | None = None) -> dict[str, str]:
    """check-parameters' outputs for checked `values`: `past-years` and `current-years` (the
    loop items, JSON lists), `parts` (every item's part name, a comma list) and `data-key`
    (steps/year_items.py). `code_version` defaults to the package version and the fingerprint of
    the steps' code (`steps.revision.code_fingerprint`): the package version alone stayed the
    same across hundreds of commits, so a past year fetched or validated by older code was
    reused after fetch or validate changed."""
    if code_version is None:
        code_version = f"{__version__}+{code_fingerprint()}"
    source = values.get("source") or FETCH.flag("source").default
    # A source read whole (table) is one item, whose rows the years choose: they decide its data.
    names = DATA_PARAMETERS if source in BY_YEAR_SOURCES else (*DATA_PARAMETERS, "years")
    key = data_key(canonical_values(values, names), names, code_version)
    past, current = loop_items(source, values.get("years", ""), key)
    return {
        "past-years": json.dumps(past, separators=(",", ":")),
        "current-years": json.dumps(current, separators=(",", ":")),
        "parts": ",".join(item["part"] for item in [*past, *current]),
        "data-key": key,
    }


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
        # --outputs-dir (or its variable) as every stage reads it, and checked before anything.
        raw, source = OUTPUTS_DIR.given(namespace)
        namespace.outputs_dir = OUTPUTS_DIR.convert(raw, source)
        CHECK_PARAMETERS.refuse_occupied_outputs(namespace, source or OUTPUTS_DIR.option)
        check_pipeline_parameters(values)
        # One JSON line on stdout, the outputs, as every step prints (docs/steps.md).
        CHECK_PARAMETERS.write_outputs(namespace.outputs_dir, fan_out_outputs(values))

    return run(body)
