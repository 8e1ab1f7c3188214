"""Deploy stage: serve one registered model version on a target (`local` process or `kubernetes`).

`python -m steps deploy --target {local,kubernetes} --version V`; contract in docs/steps.md.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from steps.cli import BadInput, run
from steps.deploy_targets.common import DeployRequest, DeployResult, fetch_verified_model
from steps.processes import sigterm_raises
from steps.settings import MlflowSettings
from steps.stages import DEPLOY
from steps.tracking import canonical_version, mlflow_session


def _deploy_local(request: DeployRequest, args: argparse.Namespace) -> DeployResult:
    from steps.deploy_targets.local import deploy_local

    return deploy_local(
        request, host=args.host, port=args.port, state_dir=args.state_dir, timeout=args.timeout
    )


def _deploy_kubernetes(request: DeployRequest, args: argparse.Namespace) -> DeployResult:
    # Imported on use: the local target should not pay for loading the Kubernetes client.
    from steps.deploy_targets.kubernetes import deploy_kubernetes

    if not request.run_id:  # provenance: the version's own run, whichever run deploys it
        request = replace(request, run_id=_registered_run_id(request))

    return deploy_kubernetes(
        request,
        namespace=args.namespace,
        deployment=args.deployment,
        service_url=args.service_url or f"http://{args.deployment}.{args.namespace}.svc:8080",
        timeout=args.timeout,
        kube_api=args.kube_api,
    )


def _registered_run_id(request: DeployRequest) -> str:
    """The MLflow run that logged the version to serve ("" when the registry names none); called
    inside main's `mlflow_session`, which bounds the retries and words the errors."""
    from mlflow import MlflowClient

    client = MlflowClient(request.tracking_uri, registry_uri=request.tracking_uri)
    return client.get_model_version(request.model_name, request.version).run_id or ""


# Target name (steps.deploy_targets.TARGETS) -> function that serves the request there.
_DEPLOY: dict[str, Callable[[DeployRequest, argparse.Namespace], DeployResult]] = {
    "local": _deploy_local,
    "kubernetes": _deploy_kubernetes,
}


def check_version_exists(request: DeployRequest) -> None:
    """Fail before touching any server if the registry does not know this model version, or if
    it is not this project's served model (its code would run in the model server;
    steps/model_trust.py). The local target does this itself, on the copy it serves."""
    with tempfile.TemporaryDirectory(prefix="dewpoint-model-check-") as tmp:
        fetch_verified_model(request, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: parse flags, check the version exists, deploy, write outputs."""

    def body() -> None:
        args = DEPLOY.parse(argv)
        # SIGTERM runs the same cleanup as an exception: no server is left unrecorded and an
        # interrupted swap restores the old one (steps/deploy_targets/local.py).
        with sigterm_raises():
            deploy(args)

    def deploy(args: argparse.Namespace) -> None:
        if args.stop:
            if args.target != "local":
                raise BadInput("--stop only applies to --target local")
            from steps.deploy_targets.local import stop_local

            stopped = stop_local(args.state_dir, timeout=args.timeout)
            DEPLOY.write_outputs(args.outputs_dir, {"served-version": "none", "changed": stopped})
            return
        if args.version is None:
            raise BadInput("no model version: pass --version")
        settings = MlflowSettings.from_args(args)
        request = DeployRequest(
            model_name=settings.model_name,
            version=canonical_version(args.version),
            tracking_uri=settings.tracking_uri,
            run_id=args.run_id or "",
            workflow_uid=args.workflow_uid or "",
        )
        # MLflow's bounded retries and timeouts, as in the other steps (steps/tracking.py): a dead
        # tracking server fails the step in seconds (exit 75), not after MLflow's ~250 s default.
        with mlflow_session(settings):
            if args.target != "local":
                check_version_exists(request)
            result = _DEPLOY[args.target](request, args)
        DEPLOY.write_outputs(
            args.outputs_dir, {"served-version": result.served_version, "changed": result.changed}
        )

    return run(body)
