"""README "Calling the model": every body and both curl calls it shows, against a real
`mlflow models serve` of our model, so the section cannot drift from what MLflow accepts."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from steps.model import LinearCoefficients
from tests.model_helpers import REPO, served_lean_model
from workflows.demo import DEFAULT_SERVE_PORT

COEF, INTERCEPT = 0.8, -10.0
# Where `make demo` serves the model: the README's calls are written for it.
DOCUMENTED_URL = f"http://127.0.0.1:{DEFAULT_SERVE_PORT}"


def _section() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"^### Calling the model\n(.*?)(?=^##)", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no 'Calling the model' section"
    return match.group(1)


def _table_bodies() -> list[dict]:
    rows = re.findall(r"^\| `(\{.*?\})` \|", _section(), re.MULTILINE)
    return [json.loads(row) for row in rows]


def _documented_calls() -> list[tuple[int, list[str]]]:
    """(expected status, curl argv) for each curl in the section's shell block."""
    block = re.search(r"```sh\n(.*?)```", _section(), re.DOTALL)
    assert block, "the section lost its curl example"
    calls, expected, command = [], None, ""
    for line in block.group(1).splitlines():
        if line.startswith("#"):
            status = re.match(r"# (\d{3})\b", line)
            expected = int(status.group(1)) if status else expected
            continue
        command += line.rstrip("\\") + " "
        if not line.endswith("\\"):
            calls.append((expected, shlex.split(command)))
            command = ""
    return calls


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("calling")
    with served_lean_model(root, LinearCoefficients(COEF, INTERCEPT)) as (url, _, _):
        yield url


def _post(url: str, content_type: str, body: str) -> httpx.Response:
    return httpx.post(
        f"{url}/invocations", content=body, headers={"Content-Type": content_type}, timeout=60
    )


def test_the_section_shows_the_three_bodies_and_the_old_call() -> None:
    assert [next(iter(body)) for body in _table_bodies()] == [
        "dataframe_split",
        "dataframe_records",
        "inputs",
    ]
    assert [status for status, _ in _documented_calls()] == [415, 200]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(3))
def test_each_documented_body_gets_one_prediction_per_row(served: str, index: int) -> None:
    body = _table_bodies()[index]
    response = _post(served, "application/json", json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == pytest.approx(
        [12.8 * COEF + INTERCEPT, 50.0 * COEF + INTERCEPT], abs=1e-9
    )


def _header_and_body(argv: list[str]) -> tuple[str, str]:
    header = argv[argv.index("-H") + 1]
    assert header.lower().startswith("content-type: ")
    return header.split(":", 1)[1].strip(), argv[argv.index("-d") + 1]


@pytest.mark.slow
def test_the_prototype_call_is_refused_and_its_conversion_works(served: str) -> None:
    (old_status, old), (new_status, new) = _documented_calls()
    content_type, body = _header_and_body(old)
    assert content_type == "application/json; format=pandas-split"
    refused = _post(served, content_type, body)
    assert refused.status_code == old_status == 415
    assert "The MLflow Model scoring protocol has changed in MLflow version 2.0" in refused.text
    assert "mlflow==1.30.0" in refused.text

    # The conversion the README describes, done here, gives exactly the documented new call.
    converted = {"dataframe_split": json.loads(body)}
    new_type, new_body = _header_and_body(new)
    assert (new_type, json.loads(new_body)) == ("application/json", converted)
    answered = _post(served, new_type, new_body)
    assert answered.status_code == new_status == 200, answered.text
    assert answered.json()["predictions"] == pytest.approx([12.8 * COEF + INTERCEPT], abs=1e-9)


@pytest.mark.slow
def test_the_documented_curl_commands_run_as_written(served: str) -> None:
    """The shell block itself, with only the port changed: curl gets the documented statuses."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    calls = _documented_calls()
    assert all(any(DOCUMENTED_URL in a for a in argv) for _, argv in calls), calls
    for status, argv in calls:
        argv = [a.replace(DOCUMENTED_URL, served) for a in argv]
        result = subprocess.run(
            [curl, "-o", "/dev/null", "-w", "%{http_code}", *argv[1:]],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.stdout == str(status), (argv, result.stdout, result.stderr)


@pytest.mark.slow
def test_an_old_records_body_wrapped_as_documented_is_accepted(served: str) -> None:
    """`format=pandas-records` bodies: refused as they were, accepted as dataframe_records."""
    assert '`{"dataframe_records": <old body>}`' in _section()
    old = json.dumps([{"temp": 12.8}, {"temp": 50.0}])
    assert _post(served, "application/json; format=pandas-records", old).status_code == 415
    answered = _post(served, "application/json", json.dumps({"dataframe_records": json.loads(old)}))
    assert answered.status_code == 200, answered.text
    assert len(answered.json()["predictions"]) == 2
