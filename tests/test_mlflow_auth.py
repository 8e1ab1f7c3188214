"""The cluster's MLflow authentication, proven on a real `mlflow server --app-name basic-auth` on
127.0.0.1 with the repository's own basic_auth.ini, the MLflow Deployment's environment and the
mlflow-users Job's command: the pipeline user trains, registers and moves the champion; the model
server and the UI viewer read but cannot move an alias; nobody gets in without a password."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest

from steps.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_TRANSIENT
from steps.processes import stop_process_group
from steps.promote import CHAMPION, promote_if_better
from steps.register import train_and_register
from steps.settings import MlflowSettings
from tests.conftest import free_port, mlflow_executable, wait_http_ok
from tests.mlflow_auth_env import (
    MLFLOW,
    client_env,
    container,
    generated_secrets,
    secret_env,
    server_env,
)
from tests.model_helpers import (
    dewpoint_frame,
    error_line,
    made_in_fahrenheit,
    run_step,
    step_env,
    write_dataset,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@dataclass
class AuthServer:
    url: str
    secrets: dict[str, dict[str, str]]

    def env(self, secret: str) -> dict[str, str]:
        """MLflow client credentials of one user (the variables MLflow's client reads)."""
        return client_env(self.secrets, secret)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    root = tmp_path_factory.mktemp("mlflow-basic-auth")
    generated = generated_secrets()
    env = server_env(root, generated)
    c = container(MLFLOW / "deployment.yaml")
    (app,) = [a for a in c["args"] if a.startswith("--app-name=")]
    port = free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [mlflow_executable(), "server", app, "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/health", timeout=180, proc=proc)
        yield AuthServer(url, generated)
    finally:
        if proc.poll() is None:
            stop_process_group(proc.pid)


def run_users_job(server: AuthServer) -> subprocess.CompletedProcess[str]:
    """The mlflow-users Job's command and environment, against the test server."""
    c = container(MLFLOW / "users-job.yaml")
    env = step_env(**secret_env(c, server.secrets))
    env.update(MLFLOW_TRACKING_URI=server.url, HOME=os.environ.get("HOME", "/tmp"))
    return subprocess.run(
        [sys.executable, *c["command"][1:], *c["args"]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def users(server: AuthServer) -> AuthServer:
    first = run_users_job(server)
    assert first.returncode == 0, first.stderr
    again = run_users_job(server)  # every make kind-up runs it again
    assert again.returncode == 0, again.stderr
    assert "user viewer: password set" in again.stdout
    return server


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch, users: AuthServer):
    def switch(secret: str) -> MlflowSettings:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", users.url)
        for key, value in users.env(secret).items():
            monkeypatch.setenv(key, value)
        return MlflowSettings(users.url)

    return switch


def test_nobody_gets_in_without_a_password(users: AuthServer) -> None:
    search = f"{users.url}/api/2.0/mlflow/registered-models/search"
    assert httpx.get(search, timeout=60).status_code == 401
    assert httpx.get(search, auth=("viewer", "wrong"), timeout=60).status_code == 401
    viewer = users.secrets["mlflow-viewer"]
    assert httpx.get(search, auth=(viewer["username"], viewer["password"]), timeout=60).is_success


def test_pipeline_user_moves_the_champion_read_only_users_cannot(
    users: AuthServer, as_user, tmp_path: Path
) -> None:
    settings = as_user("mlflow-pipeline")
    trained, first = train_and_register(dewpoint_frame(rows=400, seed=1), settings)
    made_in_fahrenheit(settings.tracking_uri, trained.run_id)  # the first champion's data
    holdout = dewpoint_frame(rows=150, seed=2)
    assert promote_if_better(settings, first.version, holdout).promoted
    _, second = train_and_register(dewpoint_frame(rows=400, seed=3), settings)
    assert promote_if_better(settings, second.version, holdout, tolerance=100.0).promoted
    _, third = train_and_register(dewpoint_frame(rows=400, seed=4), settings)  # left undecided
    client = mlflow.MlflowClient(users.url)
    assert (
        client.get_model_version_by_alias(settings.model_name, CHAMPION).version == second.version
    )

    # The model server's user loads the champion; neither it nor the viewer can move the alias.
    for secret in ("mlflow-model-server", "mlflow-viewer"):
        reader = as_user(secret)
        client = mlflow.MlflowClient(reader.tracking_uri)
        champion = client.get_model_version_by_alias(settings.model_name, CHAMPION)
        assert champion.version == second.version
        with pytest.raises(mlflow.exceptions.MlflowException) as refused:
            client.set_registered_model_alias(settings.model_name, CHAMPION, first.version)
        assert refused.value.get_http_status_code() == 403
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@{CHAMPION}")
    assert len(model.predict(holdout[["temp"]])) == len(holdout)

    # The promote step with the viewer's credentials on an undecided version the gate would
    # promote: its first write is refused (one line), no tag is written, the champion stays.
    path = write_dataset(holdout, tmp_path / "holdout.parquet")
    viewer = step_env(**users.env("mlflow-viewer"))
    result = run_step(
        "promote", "--version", third.version, "--holdout", str(path), "--tolerance", "100",
        "--tracking-uri", users.url, env=viewer,
    )  # fmt: skip
    assert "403" in error_line(result) or "Permission denied" in error_line(result)
    client = mlflow.MlflowClient(users.url)
    assert (
        client.get_model_version_by_alias(settings.model_name, CHAMPION).version == second.version
    )
    written = client.get_model_version(settings.model_name, third.version).tags
    assert not [tag for tag in written if tag.startswith("gate.")], written

    # A version the gate decided before needs no write: the viewer reads the recorded decision,
    # exit 0, and still nothing moves.
    result = run_step(
        "promote", "--version", first.version, "--holdout", str(path), "--tolerance", "100",
        "--tracking-uri", users.url, env=viewer,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        client.get_model_version_by_alias(settings.model_name, CHAMPION).version == second.version
    )


def _job_env(server: AuthServer, **changes: str | None) -> dict[str, str]:
    """The users Job's environment against `server`; a None value removes that variable."""
    env = step_env(**secret_env(container(MLFLOW / "users-job.yaml"), server.secrets))
    env.update(MLFLOW_TRACKING_URI=server.url)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def test_users_job_with_a_wrong_admin_password_fails_once_without_a_retry_code(
    users: AuthServer,
) -> None:
    """MLflow refuses the admin: exit 1 (a retry cannot help), one line, no password in it."""
    wrong = "not-the-admin-password"
    result = run_step("mlflow-auth", env=_job_env(users, MLFLOW_TRACKING_PASSWORD=wrong))
    line = error_line(result, EXIT_FAILED)
    assert f"MLflow auth set-up at {users.url}" in line
    assert wrong not in result.stderr + result.stdout
    assert users.secrets["mlflow-pipeline"]["password"] not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"MLFLOW_TRACKING_URI": None}, "no MLflow tracking URI"),
        ({"MLFLOW_TRACKING_USERNAME": None}, "MLFLOW_TRACKING_USERNAME/PASSWORD"),
        ({"VIEWER_PASSWORD": ""}, "set VIEWER_USERNAME and VIEWER_PASSWORD"),
        ({"MODEL_NAME": " "}, "MODEL_NAME (for --model-name) is blank"),
        ({"MLFLOW_EXPERIMENT_NAME": "x" * 300}, "MLFLOW_EXPERIMENT_NAME (for --experiment)"),
    ],
)
def test_users_job_refuses_missing_or_bad_settings_before_calling_mlflow(
    server: AuthServer, changes: dict[str, str | None], needle: str
) -> None:
    """Bad input: exit 2, one line naming what to set (the server is never asked)."""
    result = run_step("mlflow-auth", env=_job_env(server, **changes))
    assert needle in error_line(result, EXIT_BAD_INPUT)
    assert result.stdout == ""


def test_users_job_with_mlflow_down_is_transient(server: AuthServer) -> None:
    """Nothing listens on the port: exit 75, the code the Job and Argo read as 'try again'."""
    env = _job_env(server, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    result = run_step("mlflow-auth", env=env)
    assert "MLflow auth set-up at http://127.0.0.1:" in error_line(result, EXIT_TRANSIENT)
