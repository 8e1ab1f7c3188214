"""The environment the cluster's MLflow Deployment runs with (kind/base/mlflow/deployment.yaml),
made local: the Secrets kind/up.sh generates, answered as the kubelet would, and the repository's
basic_auth.ini with its user database moved into a test directory."""

from __future__ import annotations

import configparser
import os
import secrets
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MLFLOW = REPO / "kind" / "base" / "mlflow"
ADMIN = "mlflow-admin"


def container(path: Path) -> dict:
    """The single container of the workload in `path`."""
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


def secret_env(c: dict, secrets_: dict[str, dict[str, str]]) -> dict[str, str]:
    """A container's env with every secretKeyRef answered from `secrets_` (as the kubelet would)."""
    env = {}
    for item in c.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            env[item["name"]] = secrets_[ref["name"]][ref["key"]]
        elif "value" in item:
            env[item["name"]] = item["value"]
    return env


def generated_secrets() -> dict[str, dict[str, str]]:
    """What kind/up.sh generates: a Secret per user (random passwords) and the admin's CSRF key."""
    generated = {
        name: {"username": user, "password": secrets.token_hex(12)}
        for name, user in (
            (ADMIN, "admin"),
            ("mlflow-pipeline", "pipeline"),
            ("mlflow-model-server", "model-server"),
            ("mlflow-viewer", "viewer"),
        )
    }
    generated[ADMIN]["flask-secret-key"] = secrets.token_hex(16)
    # Read by the Deployment's PostgreSQL URI, which the tests replace with a sqlite store.
    generated["mlflow-postgres"] = {"username": "mlflow", "password": "unused"}
    return generated


def server_env(root: Path, generated: dict[str, dict[str, str]]) -> dict[str, str]:
    """The MLflow container's environment for a server whose files live under `root`."""
    ini = configparser.ConfigParser()
    ini.read(MLFLOW / "basic_auth.ini")
    ini["mlflow"]["database_uri"] = f"sqlite:///{root / 'basic_auth.db'}"
    with (root / "basic_auth.ini").open("w") as handle:
        ini.write(handle)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(secret_env(container(MLFLOW / "deployment.yaml"), generated))
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(root / "basic_auth.ini"), HOME=str(root))
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def client_env(generated: dict[str, dict[str, str]], secret: str) -> dict[str, str]:
    """MLflow client credentials of one user (the variables MLflow's client reads)."""
    user = generated[secret]
    return {
        "MLFLOW_TRACKING_USERNAME": user["username"],
        "MLFLOW_TRACKING_PASSWORD": user["password"],
    }
