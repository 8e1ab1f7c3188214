"""Deploy stage: serve one registered model version on a target (`local` process or `kubernetes`).

`python -m steps deploy --target {local,kubernetes} (--version V | --alias champion)`; contract
in docs/steps.md.

With `--alias` (the pipeline's way), deploy serves the version the alias names when it serves,
not the one promote saw: a promote from another door (another namespace, cluster or machine,
which the workflow mutex does not hold) may move `champion` between this run's promote and its
deploy. After serving, the alias is read again; if it moved, the version it names now is served,
up to ALIAS_ROUNDS times. So a deploy never ends serving a version the alias left before it
finished, and of two racing runs, the later deploy serves the later champion (issue 10).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from steps.cli import BadInput, StepError, TransientError, run
from steps.deploy_targets.common import DeployRequest, DeployResult, fetch_verified_model
from steps.processes import sigterm_raises
from steps.settings import MlflowSettings
from steps.stages import ALIAS_ROUNDS, DEPLOY
from steps.tracking import (
    canonical_version,
    mlflow_session,
    named_by_input,
    not_in_registry,
    registered_aliases,
)


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
    """Fail before touching any server if the registry does not know this model version (bad
    input, exit 2), or if it is not this project's served model (its code would run in the model
    server; steps/model_trust.py). The local target does this itself, on the copy it serves."""
    with tempfile.TemporaryDirectory(prefix="dewpoint-model-check-") as tmp:
        fetch_verified_model(request, Path(tmp))


def serve_alias(
    read: Callable[[], str], serve: Callable[[str], DeployResult], what: str
) -> DeployResult:
    """Serve the version `read()` names (an alias's), then read it again; while it moved, serve
    the version it names now, at most ALIAS_ROUNDS serves in all (module docstring).

    Returns:
        The last serve's result, `changed` true if any serve changed what is served.

    Raises:
        TransientError: the alias still moved after the last of ALIAS_ROUNDS serves; the version
            served last stays served, and the line names it. A rerun serves the alias as it is.
        StepError: the alias was removed after a version was served; the line names that version,
            which stays served.
        Whatever `read` and `serve` raise (before any serve, nothing was changed).
    """
    try:
        version = read()
    except StepError as exc:
        message = f"{exc}: nothing to deploy; the served model, if any, is left as it is"
        raise type(exc)(message) from exc
    changed = False
    for round_ in range(1, ALIAS_ROUNDS + 1):
        result = serve(version)
        changed = changed or result.changed
        try:
            now = read()
        except StepError as exc:
            message = f"{exc}: it changed after version {version} was deployed, which stays served"
            # Its model deleted meanwhile is no bad input: the run's flags were good (exit 1).
            raise (StepError if isinstance(exc, BadInput) else type(exc))(message) from exc
        if now == version:
            return DeployResult(served_version=version, changed=changed)
        if round_ == ALIAS_ROUNDS:
            break
        print(
            f"deploy: the {what} moved from version {version} to {now} while version {version} "
            f"was being deployed: deploying version {now}",
            file=sys.stderr,
        )
        version = now
    raise TransientError(
        f"the {what} moved after each of {ALIAS_ROUNDS} deploys (now version {now}): another "
        f"promote is moving it; version {version}, deployed last, stays served; rerun deploy"
    )


def _alias_version(client: object, model_name: str, alias: str, tracking_uri: str) -> str:
    """The version `alias` of `model_name` names now.

    Raises:
        BadInput: the registry has no model `model_name`, or the model has no such alias (exit 2,
            as for an unknown `--version`: `steps.tracking.named_by_input`); nothing to serve.
    """
    with named_by_input(f"registered model {model_name!r}", tracking_uri):
        aliases = registered_aliases(client, model_name)
    version = aliases.get(alias)
    if version is None:
        raise not_in_registry(f"alias {alias!r} of registered model {model_name!r}", tracking_uri)
    return version


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
            if args.version is not None or args.alias is not None:
                raise BadInput("--stop stops what is served: not with --version or --alias")
            from steps.deploy_targets.local import stop_local

            with DEPLOY.reserve_outputs(args.outputs_dir) as outputs:  # before the server stops
                stopped = stop_local(args.state_dir, timeout=args.timeout)
                outputs.write({"served-version": "none", "changed": stopped})
            return
        if args.version is not None and args.alias is not None:
            raise BadInput("pass --version or --alias, not both: one model version to serve")
        if args.version is None and args.alias is None:
            raise BadInput("pass --version or --alias: one model version to serve")
        if args.alias is not None and args.run_id:
            raise BadInput("--run-id names one version's run: not with --alias")
        settings = MlflowSettings.from_args(args)
        if args.target == "local":
            from steps.deploy_targets.local import serving_problem

            # Before MLflow is asked anything, as the local runner's preflight asks it.
            problem = serving_problem(args.host, args.port, args.state_dir)
            if problem is not None:
                raise BadInput(problem)

        def serve(version: str) -> DeployResult:
            request = DeployRequest(
                model_name=settings.model_name,
                version=version,
                tracking_uri=settings.tracking_uri,
                run_id=args.run_id or "",
                workflow_uid=args.workflow_uid or "",
            )
            if args.target != "local":
                check_version_exists(request)
            return _DEPLOY[args.target](request, args)

        # MLflow's bounded retries and timeouts, as in the other steps (steps/tracking.py): a dead
        # tracking server fails the step in seconds (exit 75), not after MLflow's ~250 s default.
        # The outputs' room first: a full disk fails before another model is served.
        with DEPLOY.reserve_outputs(args.outputs_dir) as outputs:
            with mlflow_session(settings) as client:
                if args.alias is None:
                    result = serve(canonical_version(args.version))
                else:
                    result = serve_alias(
                        lambda: _alias_version(
                            client, settings.model_name, args.alias, settings.tracking_uri
                        ),
                        serve, f"alias {args.alias!r} of {settings.model_name!r}",
                    )  # fmt: skip
            outputs.write({"served-version": result.served_version, "changed": result.changed})

    return run(body)
