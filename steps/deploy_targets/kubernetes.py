"""Kubernetes deploy target: point the model-server Deployment at a new MODEL_URI, or roll back.

Needs only `get` and `patch` on one named Deployment (apps/v1).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from steps.cli import StepError, TransientError
from steps.deploy_targets.common import (
    DeployRequest,
    DeployResult,
    ServerUnreachable,
    smoke_test,
)

CONTAINER = "model-server"
ANNOTATION_KEYS = {
    "version": "dewpoint-pipeline/model-version",
    "run_id": "dewpoint-pipeline/run-id",
    "workflow_uid": "dewpoint-pipeline/workflow-uid",
}
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
API_TIMEOUT = 30  # seconds per API call


class RolloutFailed(StepError):
    """The Deployment controller reported that the rollout cannot finish."""


@dataclass(frozen=True)
class ServingSpec:
    """The part of the Deployment this step changes, so it can be put back exactly."""

    model_uri: str | None
    annotations: dict[str, str | None]
    replicas: int


@dataclass(frozen=True)
class DeploymentRef:
    """One Deployment and the client allowed to get and patch it."""

    api: client.AppsV1Api
    namespace: str
    name: str

    def get(self) -> client.V1Deployment:
        """Read the Deployment; API errors become one-line StepErrors."""
        with _api_errors(self, "get"):
            return self.api.read_namespaced_deployment(
                self.name, self.namespace, _request_timeout=API_TIMEOUT
            )

    def patch(self, spec: ServingSpec) -> None:
        """Strategic merge patch: MODEL_URI (env merged by name), annotations, replicas."""
        if spec.model_uri is None:
            env = [{"name": "MODEL_URI", "$patch": "delete"}]
        else:
            env = [{"name": "MODEL_URI", "value": spec.model_uri}]
        body = {
            "spec": {
                "replicas": spec.replicas,
                "template": {
                    "metadata": {"annotations": spec.annotations},
                    "spec": {"containers": [{"name": CONTAINER, "env": env}]},
                },
            }
        }
        with _api_errors(self, "patch"):
            # The client would default to json-patch for PATCH; we send a strategic merge patch.
            self.api.patch_namespaced_deployment(
                self.name,
                self.namespace,
                body,
                _content_type=STRATEGIC_MERGE,
                _request_timeout=API_TIMEOUT,
            )


def deploy_kubernetes(
    request: DeployRequest,
    *,
    namespace: str,
    deployment: str,
    service_url: str,
    timeout: float,
    kube_api: str | None = None,
) -> DeployResult:
    """Roll the model-server Deployment to `request.model_uri`; roll back if it does not serve.

    Args:
        request: model version and provenance (written as pod-template annotations).
        namespace: namespace of the Deployment.
        deployment: name of the Deployment (its container `model-server` gets MODEL_URI).
        service_url: base URL of the Service in front of it, for the smoke test.
        timeout: seconds to wait for each rollout (the new one, and a rollback).
        kube_api: explicit API server URL (tests); default in-cluster config or kubeconfig.

    Returns:
        The served version and whether anything changed.

    Raises:
        StepError: API denied or unreachable, rollout failed or smoke test failed; after a
            failure the previous MODEL_URI and annotations are patched back first.
    """
    ref = DeploymentRef(_apps_api(kube_api), namespace, deployment)
    current = ref.get()
    previous = serving_spec(current)
    if previous.model_uri == request.model_uri and _available(current):
        return DeployResult(served_version=request.version, changed=False)

    wanted = ServingSpec(
        model_uri=request.model_uri,
        annotations={
            ANNOTATION_KEYS["version"]: request.version,
            ANNOTATION_KEYS["run_id"]: request.run_id,
            ANNOTATION_KEYS["workflow_uid"]: request.workflow_uid,
        },
        replicas=max(previous.replicas, 1),  # a Deployment scaled to 0 serves nothing
    )
    ref.patch(wanted)
    try:
        wait_for_rollout(ref, timeout)
        smoke_test_service(service_url)
    except StepError as exc:
        cause = f"deploying {request.model_uri} to {namespace}/{deployment} failed: {exc}"
        try:
            ref.patch(previous)
            wait_for_rollout(ref, timeout)
        except StepError as rollback_exc:
            raise StepError(f"{cause}; rollback failed too: {rollback_exc}") from exc
        raise StepError(f"{cause}; rolled back to {previous.model_uri}") from exc
    return DeployResult(served_version=request.version, changed=True)


def serving_spec(dep: client.V1Deployment) -> ServingSpec:
    """MODEL_URI of the `model-server` container, our annotations and the replica count."""
    containers = [c for c in dep.spec.template.spec.containers if c.name == CONTAINER]
    if not containers:
        raise StepError(f"deployment {dep.metadata.name} has no container named {CONTAINER!r}")
    env = {e.name: e.value for e in containers[0].env or []}
    annotations = dep.spec.template.metadata.annotations or {}
    return ServingSpec(
        model_uri=env.get("MODEL_URI"),
        # None deletes an annotation in a merge patch: a rollback removes what we added.
        annotations={key: annotations.get(key) for key in ANNOTATION_KEYS.values()},
        replicas=1 if dep.spec.replicas is None else dep.spec.replicas,
    )


def rollout_done(dep: client.V1Deployment) -> tuple[bool, str]:
    """Whether the latest rollout is complete, decided as `kubectl rollout status` does.

    Mirrors kubectl's deployment status viewer (k8s.io/kubectl/pkg/polymorphichelpers/
    rollout_status.go): complete when the controller has observed the latest spec, every replica
    is updated, no old replica is left, and every updated replica is available.

    Raises:
        RolloutFailed: the Progressing condition says ProgressDeadlineExceeded.
    """
    status = dep.status or client.V1DeploymentStatus()
    if (status.observed_generation or 0) < (dep.metadata.generation or 0):
        return False, "waiting for the controller to observe the new spec"
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            raise RolloutFailed(f"rollout exceeded its progress deadline: {condition.message}")
    wanted = 1 if dep.spec.replicas is None else dep.spec.replicas
    updated = status.updated_replicas or 0
    if updated < wanted:
        return False, f"{updated} of {wanted} new replicas updated"
    if (status.replicas or 0) > updated:
        return False, f"{(status.replicas or 0) - updated} old replicas pending termination"
    if (status.available_replicas or 0) < updated:
        return False, f"{status.available_replicas or 0} of {updated} updated replicas available"
    return True, "rolled out"


def wait_for_rollout(ref: DeploymentRef, timeout: float, poll: float = 1.0) -> None:
    """Poll the Deployment until `rollout_done`; StepError on deadline exceeded or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        done, progress = rollout_done(ref.get())
        if done:
            return
        if time.monotonic() >= deadline:
            raise StepError(f"rollout not finished after {timeout:g}s: {progress}")
        time.sleep(poll)


def smoke_test_service(service_url: str, attempts: int = 5, pause: float = 2.0) -> None:
    """Smoke-test through the Service, retrying only failed connections.

    Right after a rollout kube-proxy may still route a connection to a pod that has just gone;
    a wrong answer is never retried.
    """
    for attempt in range(1, attempts + 1):
        try:
            smoke_test(service_url)
            return
        except ServerUnreachable:
            if attempt == attempts:
                raise
            time.sleep(pause)


def _available(dep: client.V1Deployment) -> bool:
    try:
        done, _ = rollout_done(dep)
    except RolloutFailed:
        return False
    return done and (dep.status.available_replicas or 0) >= 1


def _apps_api(kube_api: str | None) -> client.AppsV1Api:
    configuration = client.Configuration()
    try:
        if kube_api:
            configuration.host = kube_api
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(client_configuration=configuration)
    except ConfigException as exc:
        raise StepError(f"no Kubernetes configuration (in-cluster or kubeconfig): {exc}") from exc
    return client.AppsV1Api(client.ApiClient(configuration))


@contextmanager
def _api_errors(ref: DeploymentRef, verb: str) -> Iterator[None]:
    """Turn Kubernetes API failures into one-line StepErrors naming the verb and the object."""
    what = f"deployments.apps/{ref.name} in namespace {ref.namespace}"
    try:
        yield
    except ApiException as exc:
        if exc.status == 403:
            raise StepError(
                f"forbidden: missing RBAC permission '{verb}' on {what}; "
                "grant the step's service account get and patch on this Deployment"
            ) from exc
        if exc.status == 404:
            raise StepError(f"not found: {what}") from exc
        # 429 and 5xx: the API server is overloaded or restarting; a retry of the step may pass.
        error = TransientError if (exc.status or 0) in (429, *range(500, 600)) else StepError
        raise error(f"Kubernetes API {verb} {what}: {exc.status} {exc.reason}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(f"Kubernetes API unreachable ({verb} {what}): {exc}") from exc
