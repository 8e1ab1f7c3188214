"""End to end on one machine: the rendered WorkflowTemplate through the local runner, against a real
MLflow server and a real `mlflow models serve`; a worse second run must not change what is served.
"""

from __future__ import annotations

import copy
import io
import json
import os
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from steps.cli import StepError
from steps.deploy_targets.local import running_server, stop_local
from steps.sources.synthetic import expected_dewpoint
from tests.conftest import MlflowServer, free_port
from workflows.demo import main as demo_main
from workflows.demo import mlflow_down, mlflow_up, run_demo
from workflows.local import run_rendered
from workflows.pipeline import render
from workflows.settings import PipelineSettings

PAYLOAD = {"dataframe_split": {"columns": ["temp"], "data": [[12.8]]}}
# expected_dewpoint is the synthetic data's E[DEWP | TEMP]; a straight line fitted to it is within
# about 1.5 deg F between 10 and 90 deg F, and 12.8 sits near that range's edge.
PREDICTION_TOLERANCE_F = 3.0


def _predict(url: str) -> float:
    response = httpx.post(f"{url}/invocations", json=PAYLOAD, timeout=30)
    assert response.status_code == 200, response.text
    return float(json.loads(response.text)["predictions"][0])


def _run(template: dict, params: dict[str, str], run_dir: Path, env: dict[str, str]) -> dict:
    out = io.StringIO()
    code = run_rendered(template, params, run_dir=run_dir, env=env, out=out)
    assert code == 0, out.getvalue()
    return json.loads((run_dir / "run.json").read_text())


def _with_train_alpha(template: dict, alpha: str) -> dict:
    """The same template with `--alpha` on train: the workflow exposes model-type, not alpha."""
    changed = copy.deepcopy(template)
    train = next(t for t in changed["spec"]["templates"] if t["name"] == "train")
    train["container"]["args"] += ["--alpha", alpha]
    return changed


@pytest.mark.slow
def test_pipeline_serves_champion_and_a_worse_run_changes_nothing(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    template = render(PipelineSettings())["workflow-template"]
    state_dir = tmp_path / "serve"
    env = {"DEPLOY_STATE_DIR": str(state_dir), "SERVE_PORT": str(free_port())}
    params = {
        "source": "synthetic",
        "deploy-target": "local",
        "mlflow-tracking-uri": mlflow_server.url,
        "model-name": f"e2e-{uuid.uuid4().hex[:8]}",  # the MLflow server is shared by the session
    }
    try:
        first = _run(template, params, tmp_path / "run1", env)
        phases = {name: task["phase"] for name, task in first["tasks"].items()}
        assert set(phases.values()) == {"Succeeded"}, phases
        version = first["tasks"]["register"]["outputs"]["parameters"]["version"]
        gate = first["tasks"]["promote"]["outputs"]["parameters"]
        assert gate["promoted"] == "true"
        assert gate["champion-rmse"] == "none"
        assert first["tasks"]["deploy"]["outputs"]["parameters"]["served-version"] == version

        served = running_server(state_dir)
        assert served is not None and served.version == version
        prediction = _predict(served.url)
        assert prediction == pytest.approx(expected_dewpoint(12.8), abs=PREDICTION_TOLERANCE_F)

        # Deliberately worse: ElasticNet with a huge penalty flattens the slope (RMSE about 8.6
        # deg F against about 4.5 for the linear champion on the same seeded data).
        worse = _run(
            _with_train_alpha(template, "200"),
            {**params, "model-type": "elasticnet"},
            tmp_path / "run2",
            env,
        )
        gate = worse["tasks"]["promote"]["outputs"]["parameters"]
        assert worse["tasks"]["register"]["outputs"]["parameters"]["version"] == str(
            int(version) + 1
        )
        assert gate["promoted"] == "false", gate["reason"]
        assert float(gate["new-rmse"]) > float(gate["champion-rmse"])
        assert gate["champion-version"] == version
        assert worse["tasks"]["deploy"]["phase"] == "Skipped"

        still = running_server(state_dir)
        assert still is not None
        assert (still.version, still.pid, still.port) == (version, served.pid, served.port)
        assert _predict(still.url) == prediction
    finally:
        stop_local(state_dir)


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


def test_demo_never_adopts_an_mlflow_port_it_did_not_start(tmp_path: Path) -> None:
    """A healthy server on the demo's port that the demo did not start is refused, not reused."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(StepError, match="in use by a process this demo did not start"):
            mlflow_up(tmp_path, server.server_address[1])
        assert not (tmp_path / "mlflow" / "server.json").exists()
        assert mlflow_down(tmp_path) is False
    finally:
        server.shutdown()
        server.server_close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_demo_twice_then_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`make demo` twice (MLflow started, then reused; the gate decides) and `make demo-down`."""
    mlflow_port, serve_port = free_port(), free_port()
    first = run_demo(tmp_path, mlflow_port, serve_port, {"source": "synthetic"})
    assert (first["registered_version"], first["served_version"]) == ("1", "1")
    assert first["invocations"] == f"http://127.0.0.1:{serve_port}/invocations"
    prediction = json.loads(first["prediction"])["predictions"][0]
    assert prediction == pytest.approx(expected_dewpoint(12.8), abs=PREDICTION_TOLERANCE_F)
    mlflow_pid = json.loads((tmp_path / "mlflow" / "server.json").read_text())["pid"]
    try:
        second = run_demo(tmp_path, mlflow_port, serve_port, {"source": "synthetic"})
        assert json.loads((tmp_path / "mlflow" / "server.json").read_text())["pid"] == mlflow_pid
        assert second["registered_version"] == "2"
        # Same seeded data, same RMSE: the gate's `<=` promotes, and v2 is what is served.
        assert second["promoted"] == "true"
        assert second["served_version"] == "2"
        assert second["prediction"] == first["prediction"]
        served_pid = int(second["served_pid"])
    finally:
        capsys.readouterr()
        assert demo_main(["down", "--root", str(tmp_path)]) == 0
    assert "model server: stopped" in capsys.readouterr().out
    assert not _alive(mlflow_pid) and not _alive(served_pid)
    assert running_server(tmp_path / "serve") is None
