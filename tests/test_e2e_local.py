"""End to end on one machine: the rendered WorkflowTemplate through the local runner, against a real
MLflow server and a real `mlflow models serve`; a worse second run must not change what is served.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from steps.cli import StepError, TransientError
from steps.deploy_targets.common import DeployRequest
from steps.deploy_targets.local import deploy_local, running_server, stop_local
from steps.processes import exclusive_lock, pid_alive
from steps.register import train_and_register
from steps.settings import MlflowSettings
from steps.sources.synthetic import expected_dewpoint
from tests.argo_ui import process_url, workflow_page_object
from tests.conftest import MlflowServer, free_port
from tests.model_helpers import REPO, dewpoint_frame, make_experiment
from workflows import demo as demo_module
from workflows.demo import main as demo_main
from workflows.demo import mlflow_down, mlflow_up, run_demo, served_champion
from workflows.local_runner import run_rendered
from workflows.pipeline import argo_ui_links, render
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


def _local_release(mlflow_server: MlflowServer, tmp_path: Path) -> tuple[dict, dict, dict, Path]:
    """The rendered template, workflow parameters (synthetic data, the local target, a model name
    of its own: the MLflow server is shared by the session), the runner's env and state dir."""
    state_dir = tmp_path / "serve"
    env = {"DEPLOY_STATE_DIR": str(state_dir), "SERVE_PORT": str(free_port())}
    params = {
        "source": "synthetic",
        "deploy-target": "local",
        "mlflow-tracking-uri": mlflow_server.url,
        "model-name": f"e2e-{uuid.uuid4().hex[:8]}",
    }
    return render(PipelineSettings())["workflow-template"], params, env, state_dir


def _run_worse(template: dict, params: dict[str, str], run_dir: Path, env: dict) -> dict:
    """A run the gate refuses: ElasticNet with a huge penalty flattens the slope (RMSE about 8.6
    deg F against about 4.5 for the linear champion on the same seeded data)."""
    return _run(
        _with_train_alpha(template, "200"), {**params, "model-type": "elasticnet"}, run_dir, env
    )


@pytest.mark.slow
def test_pipeline_serves_champion_and_a_worse_run_changes_nothing(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    template, params, env, state_dir = _local_release(mlflow_server, tmp_path)
    try:
        first = _run(template, params, tmp_path / "run1", env)
        phases = {name: task["phase"] for name, task in first["tasks"].items()}
        assert set(phases.values()) == {"Succeeded"}, phases
        version = first["tasks"]["register"]["outputs"]["parameters"]["version"]
        gate = first["tasks"]["promote"]["outputs"]["parameters"]
        assert gate["promoted"] == "true"
        assert gate["champion-rmse"] == "none"
        assert first["tasks"]["deploy"]["outputs"]["parameters"]["served-version"] == version

        # The workflow's outputs, as Argo records them, and the Argo UI links resolved on them.
        run_id = first["tasks"]["train"]["outputs"]["parameters"]["run-id"]
        assert first["outputs"]["parameters"][:3] == [
            {"name": "mlflow-run-id", "value": run_id},
            {"name": "registered-model", "value": params["model-name"]},
            {"name": "model-version", "value": version},
        ]
        page = workflow_page_object(
            {"metadata": {"name": first["name"]}, "status": {"outputs": first["outputs"]}}
        )
        links = argo_ui_links(PipelineSettings(), "http://mlflow.example/")
        assert [process_url(link["url"], page) for link in links] == [
            f"http://mlflow.example/#/runs/{run_id}",
            f"http://mlflow.example/#/models/{params['model-name']}/versions/{version}",
        ]
        outputs = {p["name"]: p["value"] for p in first["outputs"]["parameters"]}
        assert outputs["gate-promoted"] == "true" and outputs["served-version"] == version

        served = running_server(state_dir)
        assert served is not None and served.version == version
        prediction = _predict(served.url)
        assert prediction == pytest.approx(expected_dewpoint(12.8), abs=PREDICTION_TOLERANCE_F)

        worse = _run_worse(template, params, tmp_path / "run2", env)
        gate = worse["tasks"]["promote"]["outputs"]["parameters"]
        assert worse["tasks"]["register"]["outputs"]["parameters"]["version"] == str(
            int(version) + 1
        )
        assert gate["promoted"] == "false", gate["reason"]
        assert float(gate["new-rmse"]) > float(gate["champion-rmse"])
        assert gate["champion-version"] == version
        # Deploy runs after a refusal too, and serving the champion that is served is a no-op.
        deploy = worse["tasks"]["deploy"]
        assert deploy["phase"] == "Succeeded", deploy
        assert deploy["outputs"]["parameters"] == {"served-version": version, "changed": "false"}
        outputs = {p["name"]: p["value"] for p in worse["outputs"]["parameters"]}
        assert outputs["gate-promoted"] == "false" and "champion stays" in outputs["gate-reason"]
        assert outputs["served-version"] == version

        still = running_server(state_dir)
        assert still is not None
        assert (still.version, still.pid, still.port) == (version, served.pid, served.port)
        assert _predict(still.url) == prediction
    finally:
        stop_local(state_dir)


@pytest.mark.slow
def test_a_run_whose_candidate_is_rejected_while_nothing_is_served_ends_with_the_champion_served(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """The champion's server is gone (stopped, crashed, a reboot); the next run's candidate is
    refused by the gate, and deploy still serves the champion: every run ends with it served."""
    template, params, env, state_dir = _local_release(mlflow_server, tmp_path)
    try:
        first = _run(template, params, tmp_path / "run1", env)
        champion = first["tasks"]["promote"]["outputs"]["parameters"]["champion-version"]
        served = running_server(state_dir)
        assert served is not None and served.version == champion
        prediction = _predict(served.url)
        assert stop_local(state_dir) is True
        assert running_server(state_dir) is None

        refused = _run_worse(template, params, tmp_path / "run2", env)

        gate = refused["tasks"]["promote"]["outputs"]["parameters"]
        assert gate["promoted"] == "false", gate["reason"]
        assert gate["champion-version"] == champion
        candidate = refused["tasks"]["register"]["outputs"]["parameters"]["version"]
        assert candidate != champion
        deploy = refused["tasks"]["deploy"]
        assert deploy["phase"] == "Succeeded", deploy
        assert deploy["outputs"]["parameters"] == {"served-version": champion, "changed": "true"}
        back = running_server(state_dir)
        assert back is not None
        assert back.model_uri == f"models:/{params['model-name']}/{champion}"
        assert _predict(back.url) == prediction
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


@pytest.mark.slow
def test_demo_down_and_up_clear_the_workers_of_an_mlflow_server_killed_alone(
    tmp_path: Path,
) -> None:
    """SIGKILL of the recorded `mlflow server` left its uvicorn worker serving the port:
    `make demo-down` said "not running" and `make demo` refused the port as "not started by this
    demo". Both now stop what is left of the group the demo started."""
    import signal

    from steps.processes import group_exists, port_is_free

    for down in (True, False):
        root = tmp_path / f"down-{down}"
        port = free_port()
        server, fresh = mlflow_up(root, port)
        assert fresh
        os.kill(server.pid, signal.SIGKILL)
        while pid_alive(server.pid):  # reaped (it is our child), the group lives on
            pass
        assert group_exists(server.pid) and not port_is_free("127.0.0.1", port)
        if down:
            assert mlflow_down(root) is True
        else:
            again, fresh = mlflow_up(root, port)
            assert fresh and again.pid != server.pid
            mlflow_down(root)
        assert not group_exists(server.pid)
        assert port_is_free("127.0.0.1", port)


def test_a_second_demo_waits_for_the_first_to_start_mlflow_then_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `make demo` at once: the second waits on the first's lock, not starting a server of
    its own on the same port, and refuses once the first holds it too long (exit 75)."""
    monkeypatch.setattr(demo_module, "MLFLOW_UP_LOCK_TIMEOUT_S", 0.3)
    held = rf"another demo starting MLflow \(pid {os.getpid()}\) holds"
    with (
        exclusive_lock(tmp_path / "mlflow" / "up.lock", 0, lambda _: None, what="test"),
        pytest.raises(TransientError, match=held),
    ):
        mlflow_up(tmp_path, free_port())
    assert not (tmp_path / "mlflow" / "server.json").exists()


@pytest.mark.slow
def test_demo_twice_then_make_clean_stops_both_servers(tmp_path: Path) -> None:
    """`make demo` twice (MLflow started, then reused; the gate decides), then `make clean` while
    both servers run: it stops them (as `make demo-down` does) before deleting `.demo/`."""
    root = tmp_path / ".demo"
    mlflow_port, serve_port = free_port(), free_port()
    first = run_demo(root, mlflow_port, serve_port, {"source": "synthetic"})
    assert (first["registered_version"], first["served_version"]) == ("1", "1")
    assert first["served_model"] == "models:/dewpoint-lr/1"
    assert first["invocations"] == f"http://127.0.0.1:{serve_port}/invocations"
    prediction = json.loads(first["prediction"])["predictions"][0]
    assert prediction == pytest.approx(expected_dewpoint(12.8), abs=PREDICTION_TOLERANCE_F)
    mlflow_pid = json.loads((root / "mlflow" / "server.json").read_text())["pid"]
    served_pid = int(first["served_pid"])
    try:
        second = run_demo(root, mlflow_port, serve_port, {"source": "synthetic"})
        assert json.loads((root / "mlflow" / "server.json").read_text())["pid"] == mlflow_pid
        assert second["registered_version"] == "2"
        # Same seeded data, same RMSE: the gate's `<=` promotes, and v2 is what is served.
        assert second["promoted"] == "true"
        assert second["served_version"] == "2"
        assert second["prediction"] == first["prediction"]
        served_pid = int(second["served_pid"])
    finally:
        # The Makefile run from the demo's parent directory, with this interpreter as the venv's.
        clean = subprocess.run(
            ["make", "-s", "-C", str(tmp_path), "-f", str(REPO / "Makefile"), "clean",
             f"PY={sys.executable}"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if clean.returncode != 0:
            demo_main(["down", "--root", str(root)])
    assert clean.returncode == 0, clean.stderr
    assert "model server: stopped" in clean.stdout and "MLflow server: stopped" in clean.stdout
    assert not pid_alive(mlflow_pid) and not pid_alive(served_pid)
    assert not root.exists()


def _demo(root: Path, mlflow_port: int, serve_port: int, *args: str) -> tuple[str, str]:
    """`make demo` / `make demo-down` as the Makefile runs them (`python -m workflows.demo ...`),
    on this demo directory and these ports; asserts exit 0, returns (stdout, stderr)."""
    command, *params = args
    ports = ["--mlflow-port", str(mlflow_port), "--serve-port", str(serve_port)]
    result = subprocess.run(
        [sys.executable, "-m", "workflows.demo", command, "--root", str(root),
         *(ports if command == "up" else []), *(w for p in params for w in ("-p", p))],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    return result.stdout, result.stderr


def _served_line(stdout: str) -> str:
    (line,) = [ln.strip() for ln in stdout.splitlines() if ln.strip().startswith("served:")]
    return line


@pytest.mark.slow
def test_make_demo_elasticnet_then_demo_down_then_make_demo_ends_with_the_champion_served(
    tmp_path: Path,
) -> None:
    """Issue 12: `make demo PARAMS="model-type=elasticnet"`, `make demo`, `make demo-down`,
    `make demo`: the linear candidates are refused (on the demo's seeded data ElasticNet's holdout
    RMSE is the lower, 4.4311 against 4.4316 deg F), and every demo ends (exit 0) with the
    champion served, whether or not a model server was left running."""
    root = tmp_path / ".demo"
    ports = (free_port(), free_port())
    state_dir = root / "serve"
    try:
        out, _ = _demo(root, *ports, "up", "model-type=elasticnet")
        assert "registered:      version 1, promoted" in out, out
        champion = running_server(state_dir)
        assert champion is not None and champion.model_uri == "models:/dewpoint-lr/1"
        prediction = _predict(champion.url)

        # The gate refuses the linear candidate; the champion's server is left as it is.
        out, _ = _demo(root, *ports, "up")
        assert "registered:      version 2, not promoted" in out, out
        assert _served_line(out).startswith("served:          models:/dewpoint-lr/1 (the champion")
        assert "already served, left running" in _served_line(out)
        still = running_server(state_dir)
        assert still is not None and (still.model_uri, still.pid) == (
            champion.model_uri,
            champion.pid,
        )

        out, _ = _demo(root, *ports, "down")
        assert "model server: stopped" in out and "MLflow server: stopped" in out
        assert running_server(state_dir) is None and not pid_alive(champion.pid)

        # Nothing served and the candidate refused: deploy serves the champion again.
        out, _ = _demo(root, *ports, "up")
        assert "registered:      version 3, not promoted" in out, out
        assert _served_line(out).startswith("served:          models:/dewpoint-lr/1 (the champion")
        assert "deployed by this run" in _served_line(out)
        back = running_server(state_dir)
        assert back is not None and back.model_uri == "models:/dewpoint-lr/1"
        assert back.pid != champion.pid
        assert _predict(back.url) == prediction
    finally:
        demo_main(["down", "--root", str(root)])


@pytest.mark.slow
def test_champion_check_compares_the_model_as_well_as_the_version(tmp_path: Path) -> None:
    """Another registered model served under the champion's version number is not the champion."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    make_experiment(uri, "champion-check", tmp_path / "artifacts")
    settings = MlflowSettings(uri, model_name="other-model", experiment="champion-check")
    _, other = train_and_register(dewpoint_frame(rows=300), settings)
    assert other.version == "1"
    state_dir = tmp_path / "serve"
    request = DeployRequest("other-model", other.version, uri)
    deploy_local(request, host="127.0.0.1", port=free_port(), state_dir=state_dir, timeout=240)
    try:
        assert running_server(state_dir).version == "1"
        # The demo's champion is dewpoint-lr version 1: same number, different model.
        assert served_champion(state_dir, "dewpoint-lr", "1") is None
        assert served_champion(state_dir, "other-model", "2") is None
        served = served_champion(state_dir, "other-model", "1")
        assert served is not None and served.model_uri == "models:/other-model/1"
    finally:
        stop_local(state_dir)
    assert served_champion(state_dir, "other-model", "1") is None
