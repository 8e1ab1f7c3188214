"""The served model format: the logged pyfunc loads without `steps` or scikit-learn and predicts
exactly what the fitted estimator predicts, in a fresh process and under `mlflow models serve`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import fastapi
import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from steps import model, served_model
from steps.climate import TEMP_RANGE_F
from steps.model import MODEL_TYPES
from steps.processes import stop_process_group
from steps.settings import MlflowSettings
from steps.train import TrainConfig, train_and_log
from tests.conftest import free_port, mlflow_executable, wait_http_ok
from tests.model_helpers import dewpoint_frame, make_experiment, sklearn_fit, split_rows

TOLERANCE = 1e-9
# Temperatures well outside the training range too: the formula must hold everywhere.
PROBE_TEMPS = np.concatenate([np.linspace(-80.0, 140.0, 441), [0.0, -0.0, 12.8, 1e-7]])

# Run by a bare interpreter in an empty directory, as the serving image would: `steps` and
# scikit-learn are made unimportable, so a model that needs either fails here.
FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["steps"] = None
    sys.modules["sklearn"] = None
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(sys.argv[1])
    temps = json.loads(sys.stdin.read())
    predicted = model.predict(pd.DataFrame({"temp": temps}))
    print(json.dumps({"type": type(predicted).__name__, "values": predicted.tolist(),
                      "sklearn_loaded": any(m.startswith("sklearn") and sys.modules[m] is not None
                                            for m in sys.modules)}))
    """
)


@pytest.fixture
def tracking(sqlite_tracking_uri: str, tmp_path: Path) -> MlflowSettings:
    """A private sqlite store whose experiment keeps artifacts under tmp_path."""
    settings = MlflowSettings(sqlite_tracking_uri, experiment="served-model")
    make_experiment(settings.tracking_uri, settings.experiment, tmp_path / "artifacts")
    return settings


def _sklearn_predictions(frame: pd.DataFrame, config: TrainConfig) -> np.ndarray:
    """What scikit-learn's estimator, fitted on train's training rows, predicts for PROBE_TEMPS."""
    train, _ = split_rows(frame, config.test_size, config.seed)
    line = sklearn_fit(train, config.model_type, config.alpha, config.l1_ratio)
    return PROBE_TEMPS * line.coef + line.intercept


def _clean_env(tracking_uri: str) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_pyfunc_in_a_fresh_process_equals_sklearn(
    model_type: str, tracking: MlflowSettings, tmp_path: Path
) -> None:
    frame = dewpoint_frame(rows=800, seed=21)
    config = TrainConfig(model_type=model_type)
    result = train_and_log(frame, tracking, config)

    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, result.model_uri],
        input=json.dumps(PROBE_TEMPS.tolist()),
        cwd=empty,
        env=_clean_env(tracking.tracking_uri),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["type"] == "ndarray"
    assert answer["sklearn_loaded"] is False
    np.testing.assert_allclose(
        answer["values"], _sklearn_predictions(frame, config), rtol=0, atol=TOLERANCE
    )


def test_served_model_class_reads_coefficients_from_json(tmp_path: Path) -> None:
    path = tmp_path / "coefficients.json"
    path.write_text(json.dumps({"feature": "temp", "coef": 0.75, "intercept": -9.5}))

    assert served_model.COEFFICIENTS_ARTIFACT == model.COEFFICIENTS_ARTIFACT
    assert served_model.FEATURE == model.FEATURE

    class Context:
        artifacts = {"coefficients": str(path)}  # noqa: RUF012 - stands in for MLflow's context

    served = served_model.LinearDewpointModel()
    app_class = fastapi.FastAPI
    served.load_context(Context())
    predicted = served.predict(None, pd.DataFrame({"temp": [10.0, -4.0]}))
    np.testing.assert_array_equal(predicted, [10.0 * 0.75 - 9.5, -4.0 * 0.75 - 9.5])
    # Loaded outside MLflow's scoring server (promote, tests): no app class is touched.
    assert fastapi.FastAPI is app_class
    assert served_model.limit_request_bodies() is False


def test_request_body_limit_applies_to_the_one_app_the_scoring_server_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the scoring server's module loads the model, the next FastAPI app gets the limit;
    the class is put back as it is built, so no later app does. The real server's 413s are
    tested in tests/test_faults.py."""
    original = fastapi.FastAPI
    monkeypatch.setattr(fastapi, "FastAPI", original)  # put back even if this test fails
    loading = types.ModuleType(served_model._SCORING_APP_MODULE)  # its body runs: no `app` yet
    monkeypatch.setitem(sys.modules, served_model._SCORING_APP_MODULE, loading)

    assert served_model.limit_request_bodies(1000) is True
    assert served_model.limit_request_bodies(1000) is True  # armed once, not twice
    limited = fastapi.FastAPI()
    assert fastapi.FastAPI is original
    assert fastapi.FastAPI().max_body_size is None
    assert limited.max_body_size == 1000

    loading.app = limited  # built: loading the model again arms nothing
    assert served_model.limit_request_bodies(1000) is False
    assert fastapi.FastAPI is original


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(alphabet='[]{}"\\ax,:'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_json_depth_counts_nesting_without_parsing(value: object) -> None:
    """Brackets inside strings (escaped quotes included) are text, not nesting."""
    assert served_model.json_depth(json.dumps(value).encode()) == _depth(value)


def test_request_shape_check_allows_exactly_the_signatures_columns() -> None:
    """The columns the served model lets through are the logged signature's inputs."""
    assert model.model_signature().inputs.input_names() == [served_model.FEATURE]
    ok = json.dumps({"dataframe_records": [{"temp": 1.0}]}).encode()
    assert served_model.refuse_request_shape(ok, "application/json; charset=utf-8") is None
    other = json.dumps({"dataframe_records": [{"temp": 1.0}, {"tmp": 1.0}]}).encode()
    status, message = served_model.refuse_request_shape(other, "application/json")
    assert status == 400 and "unknown column 'tmp'" in message


@pytest.mark.slow
def test_mlflow_models_serve_answers_like_sklearn(tracking: MlflowSettings, tmp_path: Path) -> None:
    frame = dewpoint_frame(rows=600, seed=22)
    result = train_and_log(frame, tracking)
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            mlflow_executable(), "models", "serve", "-m", result.model_uri,
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1",
        ],
        cwd=tmp_path,
        env=_clean_env(tracking.tracking_uri),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/ping", timeout=180, proc=proc)
        body = {"dataframe_split": {"columns": ["temp"], "data": [[t] for t in PROBE_TEMPS]}}
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert response.status_code == 200, response.text
        served = response.json()["predictions"]
        np.testing.assert_allclose(
            served, _sklearn_predictions(frame, TrainConfig()), rtol=0, atol=TOLERANCE
        )
        bad = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_split": {"columns": ["temp"], "data": [["warm"]]}},
            timeout=30,
        )
        assert bad.status_code == 400 and "temp must be a JSON number" in bad.text
    finally:
        if proc.poll() is None:
            stop_process_group(proc.pid)
            proc.wait()
        log.close()


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)


@given(st.lists(_JSON_VALUES, min_size=1, max_size=5))
def test_served_model_accepts_exactly_the_finite_numbers_within_the_physical_range(
    column: list[object],
) -> None:
    """Property: for any JSON values in `temp` (as MLflow hands them over for a column typed
    Any), the served model predicts iff every value is a finite number (not a boolean) within
    steps.climate.TEMP_RANGE_F; otherwise INVALID_PARAMETER_VALUE naming the field."""
    low, high = TEMP_RANGE_F

    def acceptable(value: object) -> bool:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and math.isfinite(value) and low <= value <= high

    frame = pd.DataFrame({"temp": pd.Series(column, dtype=object)})
    if all(acceptable(v) for v in column):
        np.testing.assert_array_equal(
            served_model.temperatures(frame, TEMP_RANGE_F), np.array(column, dtype=np.float64)
        )
    else:
        with pytest.raises(MlflowException, match=r"^temp must be") as info:
            served_model.temperatures(frame, TEMP_RANGE_F)
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
