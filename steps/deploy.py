"""Deploy stage: serve one registered model version on a target (`local` process or `kubernetes`).

`python -m steps deploy --target {local,kubernetes} --version V`; contract in docs/steps.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from steps.cli import StepError, add_outputs_dir, env_default, run, write_outputs
from steps.deploy_targets.common import DeployRequest, DeployResult
from steps.settings import MlflowSettings


def _deploy_local(request: DeployRequest, args: argparse.Namespace) -> DeployResult:
    from steps.deploy_targets.local import deploy_local

    return deploy_local(
        request, host=args.host, port=args.port, state_dir=args.state_dir, timeout=args.timeout
    )


def _deploy_kubernetes(request: DeployRequest, args: argparse.Namespace) -> DeployResult:
    # Imported on use: the local target should not pay for loading the Kubernetes client.
    from steps.deploy_targets.kubernetes import deploy_kubernetes

    return deploy_kubernetes(
        request,
        namespace=args.namespace,
        deployment=args.deployment,
        service_url=args.service_url or f"http://{args.deployment}.{args.namespace}.svc:8080",
        timeout=args.timeout,
        kube_api=args.kube_api,
    )


# Target name -> function that serves the request there. Add a target by adding a line.
TARGETS: dict[str, Callable[[DeployRequest, argparse.Namespace], DeployResult]] = {
    "local": _deploy_local,
    "kubernetes": _deploy_kubernetes,
}


def check_version_exists(request: DeployRequest) -> None:
    """Fail before touching any server if the registry does not know this model version."""
    if not request.version.isdigit() or int(request.version) < 1:
        raise StepError(f"--version must be a positive integer, got {request.version!r}")
    try:
        MlflowClient(tracking_uri=request.tracking_uri).get_model_version(
            request.model_name, request.version
        )
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise StepError(
                f"model version {request.model_name}/{request.version} is not registered "
                f"at {request.tracking_uri}"
            ) from exc
        raise StepError(
            f"cannot look up {request.model_uri} at {request.tracking_uri}: {exc}"
        ) from exc


def build_parser() -> argparse.ArgumentParser:
    """The deploy CLI: common flags, then one group per target."""
    parser = argparse.ArgumentParser(prog="python -m steps deploy", description=__doc__)
    # Target is checked in main(), not by argparse `choices`, to fail with our one-line error.
    parser.add_argument("--target", help=f"where to serve: {', '.join(TARGETS)}")
    parser.add_argument("--version", help="registered model version to serve")
    parser.add_argument("--run-id", default="", help="provenance: MLflow run of the model")
    parser.add_argument("--workflow-uid", default="", help="provenance: Argo workflow UID")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for a server's /ping or a rollout (default 300)",
    )
    MlflowSettings.add_arguments(parser)
    add_outputs_dir(parser)

    local = parser.add_argument_group("target local")
    local.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    local.add_argument(
        "--port",
        type=int,
        default=env_default("SERVE_PORT", "5001"),  # a string: argparse converts and checks it
        help="port to serve on (env SERVE_PORT, default 5001)",
    )
    local.add_argument(
        "--state-dir",
        type=Path,
        default=env_default("DEPLOY_STATE_DIR", ".demo/serve"),
        help="PID/port/version state and server logs (env DEPLOY_STATE_DIR, default .demo/serve)",
    )
    local.add_argument(
        "--stop", action="store_true", help="stop the locally served model (by its PID) and exit"
    )

    kube = parser.add_argument_group("target kubernetes")
    kube.add_argument(
        "--namespace",
        default=env_default("POD_NAMESPACE", "mlops"),
        help="namespace of the Deployment (env POD_NAMESPACE, default mlops)",
    )
    kube.add_argument(
        "--deployment", default="model-server", help="Deployment to patch (default model-server)"
    )
    kube.add_argument(
        "--service-url",
        help="model server URL for the smoke test (default http://<deployment>.<namespace>.svc:8080)",
    )
    kube.add_argument(
        "--kube-api", help="Kubernetes API URL (tests); default in-cluster config, else kubeconfig"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: parse flags, check the version exists, deploy, write outputs."""
    args = build_parser().parse_args(argv)

    def body() -> None:
        if args.target not in TARGETS:
            given = f"unknown target {args.target!r}" if args.target else "no --target given"
            raise StepError(f"{given}; choose one of {', '.join(TARGETS)}")
        if args.stop:
            if args.target != "local":
                raise StepError("--stop only applies to --target local")
            from steps.deploy_targets.local import stop_local

            write_outputs(
                args.outputs_dir, {"served-version": "none", "changed": stop_local(args.state_dir)}
            )
            return
        if not args.version:
            raise StepError("no model version: pass --version")
        settings = MlflowSettings.from_args(args)
        request = DeployRequest(
            model_name=settings.model_name,
            version=args.version,
            tracking_uri=settings.tracking_uri,
            run_id=args.run_id,
            workflow_uid=args.workflow_uid,
        )
        check_version_exists(request)
        result = TARGETS[args.target](request, args)
        write_outputs(
            args.outputs_dir, {"served-version": result.served_version, "changed": result.changed}
        )

    return run(body)
