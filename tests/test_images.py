"""Container tests of the baked images (docker/): non-root, read-only root, step CLIs, MLflow on
PostgreSQL, the pipeline through the local runner's docker backend, and the serving image."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from steps.__main__ import STAGES
from tests.conftest import free_port

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
IMAGE_KINDS = ("step", "mlflow", "serve")
CONTAINER_UID = "10001"
# The pod's constraints as `docker run` flags: what Kubernetes enforces in the cluster.
RESTRICTED = ["--network", "host", "--read-only", "--tmpfs", "/tmp"]
PAYLOAD = {"dataframe_split": {"columns": ["temp"], "data": [[12.8]]}}


def package_version() -> str:
    """The package version in pyproject.toml: the tag of every image."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def image_tag(kind: str) -> str:
    """`dewpoint-pipeline/<kind>:<version>`, as `make images` tags it."""
    return f"dewpoint-pipeline/{kind}:{package_version()}"


def docker_program() -> str:
    """The docker client: $DOCKER (set by scripts/container-stage.sh) or `docker` on PATH."""
    return os.environ.get("DOCKER") or "docker"


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the docker client; on failure show its stderr in the assertion message."""
    proc = subprocess.run(
        [docker_program(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"docker {' '.join(args[:3])}... exited {proc.returncode}: {proc.stderr[-2000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """The three image tags; fail (not skip) when Docker or an image is missing."""
    info = subprocess.run([docker_program(), "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        pytest.fail(f"Docker is not usable ({docker_program()} info failed): {info.stderr[-500:]}")
    tags = {kind: image_tag(kind) for kind in IMAGE_KINDS}
    missing = [t for t in tags.values() if docker("image", "inspect", t, check=False).returncode]
    if missing:
        pytest.fail(f"images not built: {', '.join(missing)}; run make images")
    return tags


def inspect(ref: str) -> dict:
    """`docker inspect` of one image or container."""
    return json.loads(docker("inspect", ref).stdout)[0]


@dataclass
class Container:
    """A detached container started by a test; removed by the fixture that made it."""

    name: str

    def logs(self) -> str:
        """The last lines of its output, for failure messages."""
        proc = docker("logs", "--tail", "60", self.name, check=False)
        return (proc.stdout + proc.stderr)[-4000:]

    def running(self) -> bool:
        """Whether the container's process is still running."""
        return bool(inspect(self.name)["State"]["Running"])

    def wait_http(self, url: str, timeout: float = 240.0) -> None:
        """Poll `url` until 200; fail early, with the container's logs, if it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                pytest.fail(f"container {self.name} exited before {url} answered:\n{self.logs()}")
            try:
                if httpx.get(url, timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"{url} did not answer 200 within {timeout}s:\n{self.logs()}")

    def remove(self) -> None:
        """Stop and delete the container (only this one, by name)."""
        docker("rm", "--force", self.name, check=False)


def run_detached(image: str, *args: str, flags: list[str]) -> Container:
    """`docker run -d` with a unique name, so teardown removes exactly what the test started."""
    name = f"dewpoint-test-{uuid.uuid4().hex[:10]}"
    docker("run", "--detach", "--name", name, *flags, image, *args)
    return Container(name)


def writable_by_container(path: Path) -> Path:
    """Make a host directory writable by UID 10001 (it is bind-mounted into a container)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, int(CONTAINER_UID), int(CONTAINER_UID))
    else:
        path.chmod(0o777)
    return path


# ------------------------------------------------------------------------------ image properties


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_runs_as_uid_10001_not_root(images: dict[str, str], kind: str) -> None:
    config = inspect(images[kind])["Config"]
    assert config["User"] == f"{CONTAINER_UID}:{CONTAINER_UID}"
    ids = docker("run", "--rm", *RESTRICTED, images[kind], "sh", "-c", "id -u; id -g").stdout
    assert ids.split() == [CONTAINER_UID, CONTAINER_UID]


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_labels_carry_version_and_revision(images: dict[str, str], kind: str) -> None:
    labels = inspect(images[kind])["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == package_version()
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"])
    assert labels["dewpoint-pipeline.git-dirty"] in ("true", "false")
    assert "org.opencontainers.image.source" in labels


def test_step_image_code_reports_the_revision_in_its_labels(images: dict[str, str]) -> None:
    """What train and register tag runs and versions with, inside the image (no .git there)."""
    labels = inspect(images["step"])["Config"]["Labels"]
    script = "from steps.revision import source_revision; print(source_revision().tags())"
    out = docker("run", "--rm", *RESTRICTED, images["step"], "python", "-c", script).stdout
    assert out.strip() == str(
        {
            "code.git_commit": labels["org.opencontainers.image.revision"],
            "code.git_dirty": labels["dewpoint-pipeline.git-dirty"],
        }
    )


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_has_no_compiler_curl_or_pip_cache(images: dict[str, str], kind: str) -> None:
    script = (
        "for p in gcc cc curl wget; do command -v $p; done; "
        "ls -d /root/.cache /tmp/.cache /opt/venv/.cache 2>/dev/null; true"
    )
    found = docker("run", "--rm", "--user", "0", images[kind], "sh", "-c", script).stdout
    assert found.strip() == ""


@pytest.mark.parametrize(("kind", "path"), [("mlflow", "/health"), ("serve", "/ping")])
def test_healthcheck_uses_python_on_the_served_path(
    images: dict[str, str], kind: str, path: str
) -> None:
    check = inspect(images[kind])["Config"]["Healthcheck"]["Test"]
    assert check[0] == "CMD-SHELL"
    assert check[1].startswith("python -c") and path in check[1]


def test_serve_image_is_lean(images: dict[str, str]) -> None:
    probe = (
        "import importlib.util as u, json; "
        "mods = ['sklearn', 'scipy', 'flask', 'sqlalchemy', 'matplotlib', 'steps', "
        "'mlflow', 'numpy', 'pandas', 'fastapi', 'uvicorn', 'uvloop', 'httptools']; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in mods}))"
    )
    found = json.loads(
        docker("run", "--rm", *RESTRICTED, images["serve"], "python", "-c", probe).stdout
    )
    absent = {m for m, present in found.items() if not present}
    assert absent == {"sklearn", "scipy", "flask", "sqlalchemy", "matplotlib", "steps"}


@pytest.mark.parametrize("stage", STAGES)
def test_step_help_in_step_image(images: dict[str, str], stage: str) -> None:
    proc = docker(
        "run", "--rm", *RESTRICTED, images["step"], "python", "-m", "steps", stage, "--help"
    )
    assert proc.stdout.startswith(f"usage: python -m steps {stage}")


def test_step_container_writes_only_work_and_tmp(images: dict[str, str], tmp_path: Path) -> None:
    work = writable_by_container(tmp_path / "work")
    name = f"dewpoint-test-{uuid.uuid4().hex[:10]}"
    try:
        proc = docker(
            "run", "--name", name, *RESTRICTED, "-v", f"{work}:/work", images["step"],
            "python", "-m", "steps", "fetch", "--source", "synthetic", "--rows", "200",
            "--output", "/work/out/dataset.parquet", "--outputs-dir", "/work/outputs",
        )  # fmt: skip
        outputs = json.loads(proc.stdout.strip().splitlines()[-1])
        assert int(outputs["row-count"]) > 0
        assert (work / "out" / "dataset.parquet").stat().st_size > 0
        assert (work / "outputs" / "data-hash").read_text() == outputs["data-hash"]
        # Nothing changed in the container's own filesystem (/tmp is a tmpfs, /work a volume).
        assert docker("diff", name).stdout.strip() == ""
    finally:
        docker("rm", "--force", name, check=False)


def test_step_image_ships_the_bigquery_client_and_fails_on_credentials(
    images: dict[str, str], tmp_path: Path
) -> None:
    """`--source bigquery` in the cluster: the template points GOOGLE_APPLICATION_CREDENTIALS at
    the optional Secret's mount; without the Secret the step says so, and with an unusable key
    it is google-auth (the client is in the image) that refuses it, in one line, offline."""
    from workflows.pipeline import GOOGLE_CREDENTIALS_DIR

    key_path = f"{GOOGLE_CREDENTIALS_DIR}/key.json"
    fetch = ["python", "-m", "steps", "fetch", "--source", "bigquery", "--years", "2023",
             "--output", "/tmp/dataset.parquet"]  # fmt: skip
    missing = docker(
        "run", "--rm", *RESTRICTED, "-e", f"GOOGLE_APPLICATION_CREDENTIALS={key_path}",
        images["step"], *fetch, check=False,
    )  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"error: GOOGLE_APPLICATION_CREDENTIALS points to {key_path}, which is not a file"
    ]
    keys = writable_by_container(tmp_path / "google")
    (keys / "key.json").write_text("{}")
    (keys / "key.json").chmod(0o644)
    unusable = docker(
        "run", "--rm", *RESTRICTED, "-v", f"{keys}:{GOOGLE_CREDENTIALS_DIR}:ro",
        "-e", f"GOOGLE_APPLICATION_CREDENTIALS={key_path}", images["step"], *fetch, check=False,
    )  # fmt: skip
    assert unusable.returncode == 1
    (line,) = unusable.stderr.strip().splitlines()
    assert line.startswith(f"error: bigquery source: the credentials in {key_path}"), line
    assert "not usable" in line and "bigquery extra" not in line


def test_kind_load_saves_an_archive_kind_can_import(images: dict[str, str], tmp_path: Path) -> None:
    """kind/load-images.sh with this machine's real Docker engine (a fake `kind` checks the
    archive it is handed): what `make kind-load` gives `kind load image-archive`."""
    from tests.kind_sandbox import EXTERNAL, Sandbox

    sandbox = Sandbox(tmp_path / "sandbox", hidden=EXTERNAL - {"docker"})
    copy = tmp_path / "manifest.json"
    sandbox.fake(
        "kind",
        f'if [ "$1 $2" = "get clusters" ]; then echo dewpoint; exit 0; fi\n'
        f'tar -xOf "$3" manifest.json > {copy}',
    )
    proc = sandbox.run(
        "load-images.sh", images["serve"], env={"DOCKER": docker_program(), "TMPDIR": str(tmp_path)}
    )
    assert proc.returncode == 0, proc.stderr
    (load,) = [c for c in sandbox.calls("kind") if c[1] == "load"]
    assert load[1:3] == ["load", "image-archive"]
    assert images["serve"] in copy.read_text()


# --------------------------------------------------------------------- PostgreSQL + MLflow image


def postgres_bin() -> Path:
    """The newest PostgreSQL server binaries of Debian's package (or initdb on PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    pytest.fail("PostgreSQL server not found: apt-get install postgresql (the CI stage does)")


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster listening on 127.0.0.1:port."""

    port: int
    user: str
    password: str
    database: str

    def psql(self, sql: str) -> str:
        """Run one SQL statement with psql; return its unaligned output."""
        proc = subprocess.run(
            [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", self.user, "-d", self.database, "-tAc", sql],
            capture_output=True, text=True, check=True, timeout=60,
            env={**os.environ, "PGPASSWORD": self.password},
        )  # fmt: skip
        return proc.stdout


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL on a free loopback port, data in a temp dir, removed afterwards."""
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="dewpoint-pg-"))
    # The server refuses to run as root: as root, run it as Debian's `postgres` user.
    run_as = "postgres" if os.geteuid() == 0 else None
    if run_as:
        shutil.chown(root, run_as, run_as)
    pg = Postgres(free_port(), "mlflow", secrets.token_hex(12), "mlflow")
    pwfile = root / "pw"
    pwfile.write_text(pg.password + "\n")
    if run_as:
        shutil.chown(pwfile, run_as, run_as)
    data = root / "data"

    def pg_run(*argv: str) -> None:
        subprocess.run(
            list(argv), user=run_as, check=True, capture_output=True, text=True, timeout=120
        )

    pg_run(str(bin_dir / "initdb"), "-D", str(data), "-U", pg.user, "--auth=scram-sha-256",
           f"--pwfile={pwfile}", "-E", "UTF8")  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {root}"
    pg_run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
           "-t", "60", "-o", options, "start")  # fmt: skip
    try:
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user,
             pg.database],
            check=True, capture_output=True, timeout=60,
            env={**os.environ, "PGPASSWORD": pg.password},
        )  # fmt: skip
        yield pg
    finally:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            user=run_as, capture_output=True, check=False, timeout=120,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class MlflowContainer:
    """The MLflow image serving on 127.0.0.1:port against PostgreSQL."""

    container: Container
    url: str
    artifacts: Path


@pytest.fixture(scope="module")
def mlflow_container(
    images: dict[str, str], postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowContainer]:
    """The MLflow image started the way kind/base/mlflow/deployment.yaml starts it."""
    artifacts = writable_by_container(tmp_path_factory.mktemp("mlflow") / "artifacts")
    port = free_port()
    # The same backend URI form as the cluster: SQLAlchemy dialect + psycopg 3 driver.
    uri = (
        f"postgresql+psycopg://{postgres.user}:{postgres.password}"
        f"@127.0.0.1:{postgres.port}/{postgres.database}"
    )
    container = run_detached(
        images["mlflow"],
        "mlflow", "server", "--host=127.0.0.1", f"--port={port}", "--workers=1",
        f"--backend-store-uri={uri}", "--serve-artifacts", "--artifacts-destination=/mlartifacts",
        flags=[*RESTRICTED, "-v", f"{artifacts}:/mlartifacts", "-e", f"PORT={port}",
               "--health-interval=2s", "--health-start-period=240s"],
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        container.wait_http(f"{url}/health")
        yield MlflowContainer(container, url, artifacts)
    finally:
        container.remove()


def test_mlflow_image_stores_runs_in_postgres(
    mlflow_container: MlflowContainer, postgres: Postgres
) -> None:
    name = f"images-test-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{mlflow_container.url}/api/2.0/mlflow/experiments/create", json={"name": name}, timeout=30
    )
    assert response.status_code == 200, response.text
    experiment_id = response.json()["experiment_id"]
    stored = postgres.psql(f"select experiment_id from experiments where name = '{name}'")
    assert stored.strip() == str(experiment_id)


def test_mlflow_image_maps_both_postgres_uri_forms_to_psycopg3(images: dict[str, str]) -> None:
    probe = (
        "import importlib.util, json, sqlalchemy as sa; "
        "uris = ['postgresql://u:p@127.0.0.1:1/db', 'postgresql+psycopg://u:p@127.0.0.1:1/db']; "
        "print(json.dumps({'drivers': [sa.create_engine(u).dialect.driver for u in uris], "
        "'psycopg2': importlib.util.find_spec('psycopg2') is not None}))"
    )
    out = docker("run", "--rm", *RESTRICTED, images["mlflow"], "python", "-c", probe).stdout
    assert json.loads(out) == {"drivers": ["psycopg", "psycopg"], "psycopg2": False}


def test_mlflow_image_health_check_turns_healthy(mlflow_container: MlflowContainer) -> None:
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = inspect(mlflow_container.container.name)["State"]["Health"]["Status"]
        if status == "healthy":
            break
        time.sleep(1)
    assert status == "healthy"


# ------------------------------------------------------------ the pipeline in the step image


def rendered_template_up_to_promote() -> dict:
    """The rendered WorkflowTemplate without its deploy task.

    Deploy `local` would start `mlflow models serve` inside the step container, which dies with
    it; here the serving image is started instead, as the cluster's model-server does.
    """
    from workflows.pipeline import render
    from workflows.settings import PipelineSettings

    template = render(PipelineSettings.from_env())["workflow-template"]
    entry = template["spec"]["entrypoint"]
    dag = next(t for t in template["spec"]["templates"] if t["name"] == entry)["dag"]
    dag["tasks"] = [t for t in dag["tasks"] if t["name"] != "deploy"]
    assert all("deploy" not in (t.get("depends") or "") for t in dag["tasks"])
    return template


def host_prediction(tracking_uri: str, model_uri: str) -> float:
    """The same model loaded by this venv's MLflow, in a fresh interpreter (no global state)."""
    code = (
        "import json, sys, mlflow, pandas as pd; "
        "m = mlflow.pyfunc.load_model(sys.argv[1]); "
        "print(json.dumps(float(m.predict(pd.DataFrame({'temp': [12.8]}))[0])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, model_uri], capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pipeline_in_step_image_then_serve_image(
    images: dict[str, str], mlflow_container: MlflowContainer, tmp_path: Path
) -> None:
    from workflows.local_runner import run_rendered

    started = time.monotonic()
    template = rendered_template_up_to_promote()
    entry = template["spec"]["entrypoint"]
    dag = next(t for t in template["spec"]["templates"] if t["name"] == entry)["dag"]
    rc = run_rendered(
        template,
        {
            "source": "synthetic",
            "synthetic-rows": "2000",
            "mlflow-tracking-uri": mlflow_container.url,
            "deploy-target": "local",
        },
        run_dir=tmp_path / "run",
        backend="docker",
        docker=docker_program(),
        lock_file=tmp_path / "local-runner.lock",
    )
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rc == 0, json.dumps(run["tasks"], indent=1)[-3000:]
    # Every task of the template up to promote (check-parameters first), read from the template.
    assert {t: r["phase"] for t, r in run["tasks"].items()} == dict.fromkeys(
        (t["name"] for t in dag["tasks"]), "Succeeded"
    )
    promote = run["tasks"]["promote"]["outputs"]["parameters"]
    version = run["tasks"]["register"]["outputs"]["parameters"]["version"]
    assert promote["promoted"] == "true"
    assert promote["champion-version"] == version
    # The model's files went through the server's artifact proxy into the mounted volume.
    assert any(p.name == "MLmodel" for p in mlflow_container.artifacts.rglob("MLmodel"))
    took = time.monotonic() - started
    print(f"pipeline ({len(dag['tasks'])} steps in the step image) took {took:.1f}s")

    port = free_port()
    model_uri = f"models:/dewpoint-lr/{version}"
    serve = run_detached(
        images["serve"],
        flags=[*RESTRICTED, "-e", f"MODEL_URI={model_uri}", "-e", "HOST=127.0.0.1",
               "-e", f"PORT={port}", "-e", f"MLFLOW_TRACKING_URI={mlflow_container.url}"],
    )  # fmt: skip
    try:
        started = time.monotonic()
        serve.wait_http(f"http://127.0.0.1:{port}/ping")
        print(f"serve image: /ping answered {time.monotonic() - started:.1f}s after start")
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", json=PAYLOAD, timeout=30)
        assert response.status_code == 200, response.text
        predicted = response.json()["predictions"][0]
        predicted = predicted if isinstance(predicted, float) else float(predicted)
        assert math.isfinite(predicted)
        # Same number as the model loaded on the host, and near the synthetic data's relation.
        assert predicted == pytest.approx(host_prediction(mlflow_container.url, model_uri))
        from steps.sources.synthetic import expected_dewpoint

        assert abs(predicted - expected_dewpoint(12.8)) < 20.0
        assert docker("diff", serve.name).stdout.strip() == ""
        assert docker("diff", mlflow_container.container.name).stdout.strip() == ""
    finally:
        serve.remove()
