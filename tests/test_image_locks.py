"""The images' hashed locks (docker/requirements-*.lock) agree with pyproject.toml and are complete:
a dependency bumped in one place but not re-locked (`make lock-images`) fails here, not in a pod."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCKS = ("step", "mlflow", "serve", "build")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(path: Path) -> dict[str, str]:
    """Name -> version of every pinned requirement in a uv/pip-compile lock; checks hashes."""
    pins: dict[str, str] = {}
    blocks = re.split(r"\n(?=\S)", path.read_text())
    for block in blocks:
        match = _PIN.match(block)
        if not match:
            continue
        assert "--hash=sha256:" in block, f"{path.name}: {match.group(1)} has no hash"
        pins[canonical(match.group(1))] = match.group(3)
    return pins


def pyproject() -> dict:
    """pyproject.toml as a dict."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def exact_pins(requirements: list[str]) -> dict[str, str]:
    """Name -> version of `name==version` requirements (all of ours are exact)."""
    pins = {}
    for requirement in requirements:
        match = _PIN.match(requirement)
        assert match, f"not an exact pin: {requirement!r}"
        pins[canonical(match.group(1))] = match.group(3)
    return pins


@pytest.mark.parametrize("image", LOCKS)
def test_lock_pins_every_package_with_hashes(image: str) -> None:
    pins = parse_lock(REPO / "docker" / f"requirements-{image}.lock")
    assert pins, f"requirements-{image}.lock pins nothing"


def test_step_lock_has_every_project_dependency_at_its_pinned_version() -> None:
    locked = parse_lock(REPO / "docker" / "requirements-step.lock")
    wanted = exact_pins(pyproject()["project"]["dependencies"])
    assert {n: locked.get(n) for n in wanted} == wanted


def test_build_lock_matches_build_system() -> None:
    locked = parse_lock(REPO / "docker" / "requirements-build.lock")
    assert locked == exact_pins(pyproject()["build-system"]["requires"])


@pytest.mark.parametrize("image", ["mlflow", "serve"])
def test_mlflow_image_locks_use_the_project_mlflow_version(image: str) -> None:
    mlflow = exact_pins(pyproject()["project"]["dependencies"])["mlflow"]
    locked = parse_lock(REPO / "docker" / f"requirements-{image}.lock")
    assert locked["mlflow-skinny"] == mlflow
    if image == "mlflow":
        assert locked["mlflow"] == mlflow
        assert "psycopg" in locked and "psycopg-binary" in locked
    else:
        assert "mlflow" not in locked and "scikit-learn" not in locked


def test_locks_agree_with_requirements_lock_where_they_overlap() -> None:
    venv = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        match = _PIN.match(line)
        if match:
            venv[canonical(match.group(1))] = match.group(3)
    for image in ("step", "mlflow", "serve"):
        locked = parse_lock(REPO / "docker" / f"requirements-{image}.lock")
        differ = {n: (v, venv[n]) for n, v in locked.items() if n in venv and venv[n] != v}
        assert differ == {}, f"requirements-{image}.lock vs requirements.lock: {differ}"


def test_step_lock_ships_the_bigquery_extra_at_its_pinned_version() -> None:
    """The fetch pod runs `--source bigquery` from this image: without the client it could only
    fail with "needs the bigquery extra", Secret or not."""
    locked = parse_lock(REPO / "docker" / "requirements-step.lock")
    wanted = exact_pins(pyproject()["project"]["optional-dependencies"]["bigquery"])
    assert {n: locked.get(n) for n in wanted} == wanted


def test_mlflow_lock_has_the_basic_auth_app_dependencies() -> None:
    """`mlflow server --app-name basic-auth` imports Flask-WTF (MLflow's `auth` extra)."""
    locked = parse_lock(REPO / "docker" / "requirements-mlflow.lock")
    assert "flask-wtf" in locked and "wtforms" in locked
