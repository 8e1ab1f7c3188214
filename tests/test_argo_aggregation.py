"""A loop's aggregated output parameter, `tasks.<T>.outputs.parameters.<name>`, as the local
runner computes it (workflows.argo_rules.aggregate_outputs) against what Go's own encoding/json
makes of the same values, by the steps of Argo v4.1.2's tryJSONUnmarshal and
aggregatedJSONValueList (workflow/controller/operator.go): tests/go/aggregate.go.

Argo v4.1.2 builds with Go 1.26 (its go.mod). The Go here may be older: from Go 1.22 on,
encoding/json writes \\b and \\f as such, earlier as \\u0008 and \\u000c (Go 1.22 release notes),
so the generated values leave those two characters out; the table covers them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows.argo_rules import aggregate_outputs

GO_PROGRAM = Path(__file__).parent / "go" / "aggregate.go"


def ours(values: list[str]) -> str:
    return aggregate_outputs([{"v": value} for value in values])["parameters.v"]


# Each expected value was printed by tests/go/aggregate.go (Go 1.19.8's encoding/json) for the
# values, but the \b/\f row, which follows Go 1.22's rule (module docstring).
@pytest.mark.parametrize(
    ("values", "aggregated"),
    [
        (["[NaN]", '["a"]'], '["[NaN]","[\\"a\\"]"]'),  # Go's JSON has no NaN: all strings
        (["[Infinity]"], '["[Infinity]"]'),
        (["[12345678901234567890]"], "[[12345678901234567000]]"),  # a float64, as Go reads it
        (["[1e400]"], '["[1e400]"]'),  # beyond float64: not JSON to Go
        (
            ["[2.50, 1e-7, -0.0, 1e21, 1.5e-10, 0.000001, 123456789012345678901234]"],
            "[[2.5,1e-7,-0,1e+21,1.5e-10,0.000001,1.2345678901234569e+23]]",
        ),
        (["[1E+2, 1e16, 0.1, 100]"], "[[100,10000000000000000,0.1,100]]"),
        (["a\u2028b\u2029"], '["a\\u2028b\\u2029"]'),  # escaped by Go, not by Python's json
        (['{"k":"<\u2029>&"}'], '[{"k":"\\u003c\\u2029\\u003e\\u0026"}]'),
        # raw control characters in a JSON string: not JSON (to Go or Python), so all strings
        (['["\u0001\u001f\u007f"]'], '["[\\"\\u0001\\u001f\u007f\\"]"]'),
        (['["\\u0001\\u001f\\u007f"]'], '[["\\u0001\\u001f\u007f"]]'),
        (['{"b":1,"a":[true,null,"x"]}'], '[{"a":[true,null,"x"],"b":1}]'),
        (['["\\b\\f"]'], '[["\\b\\f"]]'),
    ],
)
def test_aggregation_is_what_go_encoding_json_writes(values: list[str], aggregated: str) -> None:
    assert ours(values) == aggregated


@pytest.fixture(scope="module")
def go_aggregate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/go/aggregate.go built once; skips where no Go toolchain is installed (CI installs
    Debian's golang-go: .ci/run)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs Go to compare with encoding/json: apt-get install golang-go")
    binary = tmp_path_factory.mktemp("go") / "aggregate"
    cache = tmp_path_factory.mktemp("go-cache")
    subprocess.run(
        [go, "build", "-o", str(binary), str(GO_PROGRAM)],
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cache), "GOCACHE": str(cache / "build"),
             "GOPATH": str(cache / "path"), "GOFLAGS": "-mod=mod", "GO111MODULE": "off"},
    )  # fmt: skip
    return binary


def _go(binary: Path, values: list[str]) -> str:
    line = json.dumps(values)
    return subprocess.run(
        [str(binary)], input=line + "\n", capture_output=True, text=True, check=True
    ).stdout.rstrip("\n")


# Text without \b and \f (module docstring); JSON-like values, numbers of every size included.
_TEXT = st.text(st.characters(blacklist_characters="\b\f", blacklist_categories=("Cs",)))
_NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
)
_JSON = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
# A loop's values: JSON lists/objects (embedded), or anything else (kept as strings), written
# compactly or not, and the odd text that only looks like JSON to Python ("NaN", "1e400").
_CONTAINER = st.one_of(st.lists(_JSON, max_size=4), st.dictionaries(_TEXT, _JSON, max_size=4))
_VALUE = st.one_of(
    _CONTAINER.map(json.dumps),
    _CONTAINER.map(lambda v: json.dumps(v, indent=1, ensure_ascii=False)),
    _JSON.map(json.dumps),
    _TEXT,
    st.sampled_from(["[NaN]", "[1e400]", '{"a": -Infinity}', "[-0.0]", "[1e-7]"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_VALUE, min_size=1, max_size=5))
def test_aggregation_matches_go_encoding_json(go_aggregate: Path, values: list[str]) -> None:
    assert ours(values) == _go(go_aggregate, values)
