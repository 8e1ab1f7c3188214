"""register: make a training run's model a version of the registered model, with provenance tags.

Registering the same run again reuses the version already registered for it (tags are refreshed),
so an Argo retry of this step never leaves two versions of one run behind.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steps.cli import StepError, add_outputs_dir, env_default, run, write_outputs
from steps.model import MODEL_ARTIFACT_NAME
from steps.settings import MlflowSettings
from steps.tracking import mlflow_session

# Tag names on the model version; promote and deploy read the same names.
TAG_DATA_HASH = "data.hash"
TAG_DATA_SOURCE = "data.source"
TAG_CODE_VERSION = "code.version"
TAG_WORKFLOW_NAME = "workflow.name"
TAG_WORKFLOW_UID = "workflow.uid"


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version and whether this call created it (False: reused the run's version)."""

    name: str
    version: str
    run_id: str
    created: bool


def provenance_tags(
    *,
    data_hash: str | None = None,
    data_source: str | None = None,
    code_version: str | None = None,
    workflow_name: str | None = None,
    workflow_uid: str | None = None,
) -> dict[str, str]:
    """The version's provenance tags; the code version defaults to this package's version."""
    from steps import __version__

    tags = {
        TAG_DATA_HASH: data_hash,
        TAG_DATA_SOURCE: data_source,
        TAG_CODE_VERSION: code_version or __version__,
        TAG_WORKFLOW_NAME: workflow_name,
        TAG_WORKFLOW_UID: workflow_uid,
    }
    return {k: v for k, v in tags.items() if v}


def register_version(
    settings: MlflowSettings,
    run_id: str,
    model_uri: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> RegisteredVersion:
    """Register the model of run `run_id` under `settings.model_name`, or reuse its version.

    Args:
        settings: tracking URI and registered model name.
        run_id: the training run; it must exist.
        model_uri: the logged model (train's `model-uri`); default `runs:/<run_id>/model`.
        tags: provenance tags to set on the version (see `provenance_tags`). Data hash and
            source default to the run's own `data.hash` / `data.source` tags.

    Returns:
        The version; `created` is False when the run already had one (its tags are updated).
    """
    from mlflow.exceptions import MlflowException

    # Values read back from Argo output files may carry a trailing newline.
    run_id = (run_id or "").strip()
    model_uri = (model_uri or "").strip() or None
    if not run_id:
        raise StepError("no run id: pass --run-id (train's run-id output)")
    model_uri = model_uri or f"runs:/{run_id}/{MODEL_ARTIFACT_NAME}"
    name = settings.model_name
    with mlflow_session(settings) as client:
        import mlflow

        try:
            training_run = client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise StepError(f"run {run_id} not found at {settings.tracking_uri}") from exc
            raise
        all_tags = {
            key: training_run.data.tags[key]
            for key in (TAG_DATA_HASH, TAG_DATA_SOURCE)
            if training_run.data.tags.get(key)
        }
        all_tags.update(tags or {})

        existing = client.search_model_versions(f"name = '{_quoted(name)}' and run_id = '{run_id}'")
        if existing:
            # The first version registered for this run is the one a retry must return.
            version = min(existing, key=lambda mv: int(mv.version))
            for key, value in all_tags.items():
                if version.tags.get(key) != value:
                    client.set_model_version_tag(name, version.version, key, value)
            return RegisteredVersion(name, str(version.version), run_id, created=False)

        try:
            created = mlflow.register_model(model_uri, name, tags=all_tags)
        except MlflowException as exc:
            raise StepError(
                f"cannot register {model_uri} as {name}: {' '.join(str(exc).split())[:300]}"
            ) from exc
        return RegisteredVersion(name, str(created.version), run_id, created=True)


def train_and_register(
    frame: Any,
    settings: MlflowSettings,
    config: Any = None,
    **provenance: str,
) -> tuple[Any, RegisteredVersion]:
    """Train on `frame`, log the run and register its model: a registered version in one call.

    For tests and demos (deploy, end-to-end). `config` is a `steps.train.TrainConfig`;
    `provenance` goes to `provenance_tags` (data_hash=..., workflow_uid=..., ...).

    Returns:
        The `TrainResult` (run id, model URI, metrics, holdout) and the registered version.
    """
    from steps.train import train_and_log

    result = train_and_log(
        frame,
        settings,
        config,
        data_hash=provenance.get("data_hash"),
        data_source=provenance.get("data_source"),
    )
    tags = provenance_tags(**provenance)
    return result, register_version(settings, result.run_id, result.model_uri, tags)


def _quoted(value: str) -> str:
    """Escape a value for a single-quoted MLflow search filter."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m steps register --model-uri URI --run-id ID`."""
    parser = argparse.ArgumentParser(prog="python -m steps register", description=__doc__)
    # No env fallback for these two: MODEL_URI already names the model server's model.
    parser.add_argument("--model-uri", help="train's model-uri (default: runs:/<run-id>/model)")
    parser.add_argument("--run-id", required=True, help="train's run-id")
    parser.add_argument("--data-hash", default=env_default("DATA_HASH"), help="env DATA_HASH")
    parser.add_argument("--data-source", default=env_default("DATA_SOURCE"), help="env DATA_SOURCE")
    parser.add_argument(
        "--code-version",
        default=env_default("CODE_VERSION"),
        help="env CODE_VERSION; default: this package's version",
    )
    parser.add_argument("--workflow-name", default=env_default("WORKFLOW_NAME"), help="Argo name")
    parser.add_argument("--workflow-uid", default=env_default("WORKFLOW_UID"), help="Argo uid")
    MlflowSettings.add_arguments(parser)
    add_outputs_dir(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        settings = MlflowSettings.from_args(args)
        registered = register_version(
            settings,
            args.run_id,
            args.model_uri,
            provenance_tags(
                data_hash=args.data_hash,
                data_source=args.data_source,
                code_version=args.code_version,
                workflow_name=args.workflow_name,
                workflow_uid=args.workflow_uid,
            ),
        )
        write_outputs(args.outputs_dir, {"version": registered.version})

    return run(body)
