"""Offline checks of the kind platform (kind/): render our kustomizations with `kubectl kustomize`,
validate every object against the Kubernetes 1.37 schemas (strict), and check the policies the
cluster and the pipeline rely on: Pod Security `restricted`, probes, resources, pinned images,
least-privilege RBAC, routes, NetworkPolicies and the names shared with workflows/pipeline.py.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

from steps.processes import stop_process_group
from steps.stages import CHECK_PARAMETERS, PIPELINE
from tests.argo_ui import (
    ALLOWED_PROTOCOLS,
    LINK_FIELDS,
    LINK_SCOPES,
    process_url,
    workflow_page_object,
)
from tests.upstream import argo_install_path, load_yaml_stream, pinned_versions

REPO = Path(__file__).resolve().parents[1]
KIND = REPO / "kind"
K8S_SCHEMA_VERSION = "1.37.0"
NAMESPACE = "mlops"
DIGEST_PINNED = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Generous: the machine is shared and MLflow answers slowly under load.
HTTP_TIMEOUT = 60.0

# The upstream objects kind/base/argo patches or routes to; with our component's own objects
# (namespace, ingress, middlewares) they are what we own of the rendered kind/argo.
ARGO_OBJECTS_WE_CHANGE = {
    ("Deployment", "argo-server"),
    ("Deployment", "workflow-controller"),
    ("ConfigMap", "workflow-controller-configmap"),
    ("Service", "argo-server"),
}


# ---- rendering ---------------------------------------------------------------------------------


def kubectl() -> str:
    """kubectl from `make tools` (./bin) or PATH; the tests need it to run kustomize offline."""
    local = REPO / "bin" / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail(
            "kubectl not found: it renders the kustomizations (`kubectl kustomize`, offline). "
            "Run `make tools` or install your distribution's kubectl."
        )
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize DIR` renders (local resources only, no network)."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return load_yaml_stream(proc.stdout)


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def versions() -> dict[str, str]:
    """kind/versions.env as a dict."""
    return pinned_versions()


def package_version() -> str:
    """The version in pyproject.toml: the tag of our images."""
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["version"]


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    """Everything of ours in mlops: the kind overlay."""
    return render(KIND / "overlays" / "kind")


@pytest.fixture(scope="module")
def argo_release(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """`kubectl kustomize kind/argo` exactly as `make kind-up` renders it: the real release
    manifest (tests/upstream.py) where `make argo-manifest` puts it, in a copy of kind/."""
    manifest = argo_install_path()
    copy = tmp_path_factory.mktemp("kind-copy") / "kind"
    shutil.copytree(KIND, copy, ignore=shutil.ignore_patterns("upstream"))
    (copy / "argo" / "upstream").mkdir()
    shutil.copyfile(manifest, copy / "argo" / "upstream" / "install.yaml")
    return render(copy / "argo")


@pytest.fixture(scope="module")
def argo(argo_release: list[dict]) -> list[dict[str, Any]]:
    """What we own of the rendered kind/argo: our component's objects and the upstream ones it
    patches or routes to (the rest is upstream's, e.g. its ClusterRoles, and checked apart)."""
    component = KIND / "base" / "argo"
    resources = yaml.safe_load((component / "kustomization.yaml").read_text())["resources"]
    ours = {
        (o["kind"], o["metadata"]["name"])
        for name in resources
        for o in load_yaml_docs(component / name)
    }
    ours |= ARGO_OBJECTS_WE_CHANGE
    return [o for o in argo_release if (o["kind"], o["metadata"]["name"]) in ours]


@pytest.fixture(scope="module")
def everything(overlay: list[dict], argo: list[dict]) -> list[dict[str, Any]]:
    """Every object of ours we apply that the tests can render (Traefik's chart is remote)."""
    return [*overlay, *argo, *load_yaml_docs(KIND / "traefik-namespace.yaml")]


def find(objects: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    """The one object of `kind` named `name` (in `namespace` if given); fails otherwise."""
    matches = [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_templates(objects: list[dict]) -> Iterator[tuple[str, dict]]:
    """(`Kind/name`, pod spec) of every workload."""
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]


def all_containers(pod: dict) -> list[dict]:
    """Init containers and containers of a pod spec."""
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


# ---- schema validation -------------------------------------------------------------------------

CRD_KINDS = {("traefik.io/v1alpha1", "Middleware")}


def test_every_object_is_valid_kubernetes_1_37_strict(everything: list[dict]) -> None:
    problems = []
    for obj in everything:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue  # no OpenAPI schema in kubernetes-validate; checked structurally below
        try:
            kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)
        except (ValidationError, SchemaNotFoundError) as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
    assert not problems, "\n".join(problems)
    assert len(everything) > 30


def test_strict_validation_rejects_a_misspelt_field(overlay: list[dict]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(find(overlay, "Deployment", "mlflow")))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(broken, K8S_SCHEMA_VERSION, strict=True)


def test_middlewares_are_traefik_crds_with_one_known_action(everything: list[dict]) -> None:
    middlewares = [o for o in everything if o["kind"] == "Middleware"]
    assert len(middlewares) == 6
    for mw in middlewares:
        assert mw["apiVersion"] == "traefik.io/v1alpha1"
        assert set(mw) == {"apiVersion", "kind", "metadata", "spec"}
        (action,) = mw["spec"]
        if action == "stripPrefix":
            assert set(mw["spec"]["stripPrefix"]) == {"prefixes"}
            assert all(
                p.startswith("/") and not p.endswith("/") for p in mw["spec"][action]["prefixes"]
            )
        elif action == "buffering":
            # Traefik v3.7.11's CRD: maxRequestBodyBytes is an int64 (format int64, type integer).
            assert set(mw["spec"][action]) == {"maxRequestBodyBytes"}
            limit = mw["spec"][action]["maxRequestBodyBytes"]
            assert isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < 2**63
        else:
            assert action == "redirectRegex"
            assert set(mw["spec"][action]) == {"regex", "replacement", "permanent"}
            re.compile(mw["spec"][action]["regex"])


# ---- namespaces and Pod Security ---------------------------------------------------------------


def test_overlay_puts_every_namespaced_object_in_mlops(overlay: list[dict]) -> None:
    namespaced = [o for o in overlay if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {NAMESPACE}
    assert [o["metadata"]["name"] for o in overlay if o["kind"] == "Namespace"] == [NAMESPACE]
    # Set once: in the overlay, never in a base. The patches of upstream Argo objects name the
    # namespace upstream put them in (`argo`), or kustomize finds nothing to patch.
    patches = KIND / "base" / "argo" / "patches"
    for path in (KIND / "base").rglob("*.yaml"):
        for doc in load_yaml_docs(path):
            namespace = doc.get("metadata", {}).get("namespace")
            assert namespace == ("argo" if path.parent == patches else None), path


@pytest.mark.parametrize(
    ("source", "name"), [("overlay", NAMESPACE), ("argo", "argo"), ("traefik", "traefik")]
)
def test_namespaces_enforce_restricted_pod_security(
    overlay: list[dict], argo: list[dict], source: str, name: str
) -> None:
    objects = {
        "overlay": overlay,
        "argo": argo,
        "traefik": load_yaml_docs(KIND / "traefik-namespace.yaml"),
    }[source]
    labels = find(objects, "Namespace", name)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


ALLOWED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def restricted_violations(pod: dict, extra_containers: list[dict] | None = None) -> list[str]:
    """What Pod Security `restricted` (Kubernetes 1.37) would reject in a pod spec."""
    found = []
    pod_sc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(f"{key} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            found.append(f"volume {volume['name']} is of type {sorted(kinds)}")
    if pod_sc.get("runAsUser") == 0:
        found.append("pod runs as UID 0")
    for c in [*all_containers(pod), *(extra_containers or [])]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            found.append(f"{name}: runs as UID 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{name}: capabilities not dropped (drop: [ALL])")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities {caps['add']}")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile is {seccomp}")
        if any("hostPort" in p for p in c.get("ports", [])):
            found.append(f"{name}: uses a hostPort")
    return found


def test_restricted_checker_reports_what_admission_would_reject() -> None:
    pod = {
        "hostNetwork": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}]},
            {
                "name": "b",
                "securityContext": {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
                    "seccompProfile": {"type": "Unconfined"},
                },
            },
        ],
    }
    found = restricted_violations(pod)
    assert "hostNetwork is set" in found
    assert "volume host is of type ['hostPath']" in found
    assert "a: runAsNonRoot is not true" in found
    assert "a: allowPrivilegeEscalation is not false" in found
    assert "a: capabilities not dropped (drop: [ALL])" in found
    assert "a: uses a hostPort" in found
    assert "b: adds capabilities ['SYS_ADMIN']" in found
    assert "b: seccompProfile is Unconfined" in found
    assert not any(v.startswith("b: runAsNonRoot") for v in found)


def test_every_pod_we_own_passes_restricted(overlay: list[dict], argo: list[dict]) -> None:
    checked = 0
    for where, pod in pod_templates([*overlay, *argo]):
        assert restricted_violations(pod) == [], where
        checked += 1
    assert checked == 8


def test_our_containers_have_read_only_root_and_a_non_root_uid(overlay: list[dict]) -> None:
    for where, pod in pod_templates(overlay):
        uid = pod["securityContext"]["runAsUser"]
        assert uid > 0, where
        for c in all_containers(pod):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, f"{where} {c['name']}"
        assert pod.get("automountServiceAccountToken") is False, f"{where} needs no API token"


# ---- workloads: probes, resources, images ------------------------------------------------------


def test_services_have_probes_and_every_container_requests_and_limits(
    overlay: list[dict], argo: list[dict]
) -> None:
    for where, pod in pod_templates([*overlay, *argo]):
        for c in all_containers(pod):
            res = c.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(bound, {})), f"{where} {c['name']} {bound}"
            if not where.startswith("Job/"):
                assert "readinessProbe" in c, f"{where} {c['name']} has no readiness probe"
                assert "livenessProbe" in c, f"{where} {c['name']} has no liveness probe"
    for where, pod in pod_templates(overlay):
        if not where.startswith("Job/"):
            for c in pod["containers"]:
                assert "startupProbe" in c, f"{where} {c['name']}: slow first start needs one"


def test_images_are_pinned_and_ours_carry_the_package_version(
    overlay: list[dict], argo: list[dict]
) -> None:
    ours = {"dewpoint-pipeline/mlflow", "dewpoint-pipeline/serve"}
    seen = set()
    for where, pod in pod_templates([*overlay, *argo]):
        for c in all_containers(pod):
            repo, sep, tag = c["image"].rpartition(":")
            assert sep and "/" not in tag, f"{where}: image {c['image']} has no tag"
            assert tag != "latest" and re.search(r"\d", tag), f"{where}: {c['image']} is not pinned"
            if repo in ours:
                assert tag == package_version(), f"{where}: {c['image']}"
                assert c["imagePullPolicy"] == "IfNotPresent", "kind-loaded images are never pulled"
            seen.add(repo)
    assert ours <= seen


def test_argo_kustomization_renders_the_pinned_release_manifest_and_images() -> None:
    doc = yaml.safe_load((KIND / "argo" / "kustomization.yaml").read_text())
    v = versions()
    # A local copy that `make argo-manifest` downloads and checks against the pinned sha256: a
    # remote resource would be fetched by kustomize with no checksum at all.
    assert doc["resources"] == ["upstream/install.yaml"]
    assert HEX64.match(v["ARGO_WORKFLOWS_INSTALL_SHA256"])
    script = (KIND / "argo-manifest.sh").read_text()
    assert (
        "https://github.com/argoproj/argo-workflows/releases/download/"
        "$ARGO_WORKFLOWS_VERSION/install.yaml"
    ) in script
    assert doc["namespace"] == "argo"
    assert doc["components"] == ["../base/argo"]
    assert {i["newTag"] for i in doc["images"]} == {v["ARGO_WORKFLOWS_VERSION"]}


def test_kind_argo_renders_the_real_release_with_our_patches(argo_release: list[dict]) -> None:
    """Every namespaced object upstream ships is in `argo` (a patch without that namespace matches
    nothing), our patches reached their targets, and nothing else of upstream was dropped."""
    upstream = load_yaml_stream(argo_install_path().read_text())
    assert {o["metadata"].get("namespace") for o in upstream if "namespace" in o["metadata"]} == {
        "argo"
    }
    rendered = {(o["kind"], o["metadata"]["name"]) for o in argo_release}
    assert {(o["kind"], o["metadata"]["name"]) for o in upstream} <= rendered
    server = find(argo_release, "Deployment", "argo-server", "argo")
    assert "--base-href=/argo/" in server["spec"]["template"]["spec"]["containers"][0]["args"]
    controller = find(argo_release, "Deployment", "workflow-controller", "argo")
    assert controller["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    config = find(argo_release, "ConfigMap", "workflow-controller-configmap", "argo")
    assert "executor" in config["data"]


def test_the_whole_rendered_argo_release_is_valid_kubernetes_1_37_strict(
    argo_release: list[dict],
) -> None:
    """Upstream's objects too (CRDs, cluster roles), as our patches leave them."""
    problems = []
    for obj in argo_release:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)
        except (ValidationError, SchemaNotFoundError) as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
    assert not problems, "\n".join(problems)


# ---- Jobs: which failures are retried ----------------------------------------------------------
# Kubernetes at commit 3989b18586203eb366257fa4c8e9c0d605ec41df (validation) and
# 2b02db1be88b09193d96585c4b6dd796d6b2e06c (controller): what the API server checks in a
# podFailurePolicy beyond the JSON schema, and how the Job controller picks a rule.
_POD_FAILURE_ACTIONS = ("Count", "FailJob", "Ignore")  # FailIndex needs backoffLimitPerIndex
_CONDITION_STATUSES = ("False", "True", "Unknown")


def pod_failure_policy_violations(job: dict) -> list[str]:
    """What the API server would refuse in a Job's podFailurePolicy that the strict JSON schema
    lets through (kubernetes/kubernetes pkg/apis/batch/validation/validation.go: validateJobSpec,
    validatePodFailurePolicyRule, ...RuleOnExitCodes, ...RuleOnPodConditions)."""
    spec = job["spec"]
    policy = spec.get("podFailurePolicy")
    if policy is None:
        return []
    pod = spec["template"]["spec"]
    problems = []
    if pod.get("restartPolicy") != "Never":
        problems.append("restartPolicy: only Never is supported when podFailurePolicy is specified")
    if spec.get("podReplacementPolicy", "Failed") != "Failed":
        problems.append("podReplacementPolicy: only Failed with a podFailurePolicy")
    names = {c["name"] for c in all_containers(pod)}
    rules = policy.get("rules", [])
    if len(rules) > 20:
        problems.append("rules: at most 20")
    for i, rule in enumerate(rules):
        where = f"rules[{i}]"
        action = rule.get("action")
        if action not in _POD_FAILURE_ACTIONS and not (
            action == "FailIndex" and spec.get("backoffLimitPerIndex") is not None
        ):
            problems.append(f"{where}.action: {action!r}")
        codes, conditions = rule.get("onExitCodes"), rule.get("onPodConditions") or []
        if (codes is None) == (not conditions):
            problems.append(f"{where}: exactly one of onExitCodes and onPodConditions")
        if codes is not None:
            values = codes.get("values") or []
            if codes.get("operator") not in ("In", "NotIn"):
                problems.append(f"{where}.onExitCodes.operator: {codes.get('operator')!r}")
            if "containerName" in codes and codes["containerName"] not in names:
                problems.append(
                    f"{where}.onExitCodes.containerName: no container {codes['containerName']!r}"
                )
            if not values or len(values) > 255:
                problems.append(f"{where}.onExitCodes.values: 1 to 255 values")
            if values != sorted(set(values)):
                problems.append(f"{where}.onExitCodes.values: must be ordered, without duplicates")
            if codes.get("operator") == "In" and 0 in values:
                problems.append(f"{where}.onExitCodes.values: must not be 0 for In")
        for j, pattern in enumerate(conditions):
            if pattern.get("status", "True") not in _CONDITION_STATUSES:  # v1 defaults it to True
                problems.append(f"{where}.onPodConditions[{j}].status: {pattern.get('status')!r}")
    return problems


def failure_action(
    job: dict, container: str, exit_code: int, conditions: tuple[str, ...] = ()
) -> str:
    """What the Job controller does with a failed pod whose `container` exited `exit_code`, with
    pod conditions `conditions` (status True): the first matching rule's action, else `Count`
    (the failure counts against backoffLimit and the pod is replaced). As matchPodFailurePolicy
    in kubernetes/kubernetes pkg/controller/job/pod_failure_policy.go: exit code 0 never matches;
    a rule without containerName looks at every container."""
    for rule in job["spec"].get("podFailurePolicy", {}).get("rules", []):
        codes = rule.get("onExitCodes")
        if codes is not None:
            if codes.get("containerName", container) != container or exit_code == 0:
                continue
            listed = exit_code in codes["values"]
            if listed == (codes["operator"] == "In"):
                return rule["action"]
        elif any(
            p["type"] in conditions and p.get("status", "True") == "True"
            for p in rule.get("onPodConditions", [])
        ):
            return rule["action"]
    return "Count"


def test_pod_failure_policy_checker_reports_what_the_api_server_would_refuse() -> None:
    """The checker bites on each rule it reads from upstream validation."""
    job = {
        "spec": {
            "podFailurePolicy": {
                "rules": [
                    {"action": "FailJob", "onExitCodes": {"containerName": "x", "operator": "In",
                                                          "values": [2, 0, 2]}},
                    {"action": "Retry", "onPodConditions": [{"type": "DisruptionTarget",
                                                             "status": "Yes"}]},
                    {"action": "Ignore"},
                ]
            },
            "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "main"}]}},
        }
    }  # fmt: skip
    found = "\n".join(pod_failure_policy_violations(job))
    for needle in (
        "only Never is supported",
        "rules[0].onExitCodes.containerName: no container 'x'",
        "rules[0].onExitCodes.values: must be ordered, without duplicates",
        "rules[0].onExitCodes.values: must not be 0 for In",
        "rules[1].action: 'Retry'",
        "rules[1].onPodConditions[0].status: 'Yes'",
        "rules[2]: exactly one of onExitCodes and onPodConditions",
    ):
        assert needle in found, found


def test_mlflow_users_job_fails_at_once_on_bad_input_and_retries_only_what_may_pass(
    overlay: list[dict],
) -> None:
    """steps.mlflow_auth exits 1 (failed: a retry changes nothing) or 2 (bad input): the Job fails
    on the first such pod instead of running it backoffLimit more times; exit 75 (transient, e.g.
    MLflow not up yet), a crash and an OOM kill are retried; an eviction is not even counted."""
    from steps.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_TRANSIENT

    job = find(overlay, "Job", "mlflow-users", NAMESPACE)
    assert pod_failure_policy_violations(job) == []
    kubernetes_validate.validate(job, K8S_SCHEMA_VERSION, strict=True)  # field names, types
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 3
    container = "mlflow-users"
    assert failure_action(job, container, EXIT_FAILED) == "FailJob"
    assert failure_action(job, container, EXIT_BAD_INPUT) == "FailJob"
    for retried in (EXIT_TRANSIENT, 137, 139):  # transient; SIGKILL (OOM); SIGSEGV
        assert failure_action(job, container, retried) == "Count", retried
    assert failure_action(job, container, 137, ("DisruptionTarget",)) == "Ignore"


def test_every_job_with_a_pod_failure_policy_passes_the_api_servers_rules(
    overlay: list[dict],
) -> None:
    jobs = [o for o in overlay if o["kind"] == "Job"]
    assert any("podFailurePolicy" in j["spec"] for j in jobs)
    for job in jobs:
        assert pod_failure_policy_violations(job) == [], job["metadata"]["name"]


# ---- Argo server and controller ----------------------------------------------------------------


def test_argo_server_serves_plain_http_under_argo_with_client_auth(argo: list[dict]) -> None:
    (container,) = find(argo, "Deployment", "argo-server")["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "server",
        "--base-href=/argo/",
        "--secure=false",
        "--auth-mode=client",
    ]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTP", "--secure=false serves no TLS"
    # Upstream fields we do not override survive the patch.
    assert container["volumeMounts"] == [{"mountPath": "/tmp", "name": "tmp"}]


def test_executor_containers_are_restricted_compliant(argo: list[dict]) -> None:
    config = find(argo, "ConfigMap", "workflow-controller-configmap")["data"]
    executor = yaml.safe_load(config["executor"])
    assert set(executor) == {"resources", "securityContext"}
    # Argo adds init and wait containers with exactly this securityContext to every workflow pod.
    pod = {"containers": [{"name": "wait", **executor}]}
    assert restricted_violations(pod) == []


# ---- Argo UI links to MLflow -------------------------------------------------------------------

MLFLOW_UI = "http://localhost/mlflow/"  # the ingress route of kind/base/mlflow


def _links(config_data: dict[str, str]) -> list[dict[str, str]]:
    return yaml.safe_load(config_data["links"])


def test_ui_links_are_the_ones_the_pipeline_derives_from_its_global_outputs() -> None:
    """The patch's links point at the global output indexes the rendered template produces."""
    from workflows.pipeline import argo_ui_links
    from workflows.settings import PipelineSettings

    (patch,) = load_yaml_docs(
        KIND / "base" / "argo" / "patches" / "workflow-controller-configmap.yaml"
    )
    assert _links(patch["data"]) == argo_ui_links(PipelineSettings(), MLFLOW_UI)


def test_ui_links_reach_the_rendered_config_in_argo_v4_1_2_format(argo: list[dict]) -> None:
    data = find(argo, "ConfigMap", "workflow-controller-configmap")["data"]
    links = _links(data)
    assert [link["name"] for link in links] == ["MLflow run", "MLflow model version"]
    for link in links:
        assert set(link) <= LINK_FIELDS, "UnmarshalStrict rejects any other field"
        assert link["scope"] in LINK_SCOPES and link["scope"] == "workflow"
        assert urlsplit(link["url"]).scheme in ALLOWED_PROTOCOLS
        assert link["url"].startswith(MLFLOW_UI + "#/")


def test_ui_links_open_the_run_and_version_of_the_workflow_they_are_on(argo: list[dict]) -> None:
    """A Workflow as Argo records it after train and register: the links resolve to its run and
    version; before train has finished they open MLflow without an id rather than a wrong one."""
    links = {link["name"]: link["url"] for link in _links(
        find(argo, "ConfigMap", "workflow-controller-configmap")["data"]
    )}  # fmt: skip
    done = {
        "metadata": {"name": "dewpoint-pipeline-x7k2p", "namespace": NAMESPACE},
        "status": {"outputs": {"parameters": [
            {"name": "mlflow-run-id", "value": "0f3c"},
            {"name": "registered-model", "value": "dewpoint-lr"},
            {"name": "model-version", "value": "7"},
            {"name": "gate-promoted", "value": "true"},
        ]}},
    }  # fmt: skip
    page = workflow_page_object(done)
    assert process_url(links["MLflow run"], page) == MLFLOW_UI + "#/runs/0f3c"
    assert process_url(links["MLflow model version"], page) == (
        MLFLOW_UI + "#/models/dewpoint-lr/versions/7"
    )
    running = workflow_page_object({"metadata": done["metadata"], "status": {}})
    assert process_url(links["MLflow run"], running) == MLFLOW_UI + "#/runs/"


def test_mlflow_ui_has_the_routes_the_links_open() -> None:
    """The routes in the MLflow 3.17.2 UI bundle installed with the project (its React router)."""
    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(p.read_text(errors="replace") for p in bundle.glob("*.js"))
    assert '"/runs/:runUuid"' in text
    assert "models/:modelName/versions/:version" in text


# ---- the names shared with workflows/pipeline.py -----------------------------------------------


@pytest.fixture(scope="module")
def workflow_template() -> dict[str, Any]:
    """The WorkflowTemplate as workflows/pipeline.py renders it with default settings."""
    from workflows.pipeline import render as render_pipeline
    from workflows.settings import PipelineSettings

    return render_pipeline(PipelineSettings())["workflow-template"]


def test_workflow_template_runs_in_mlops_as_the_bound_service_account(
    overlay: list[dict], workflow_template: dict
) -> None:
    assert workflow_template["metadata"]["namespace"] == NAMESPACE
    account = workflow_template["spec"]["serviceAccountName"]
    find(overlay, "ServiceAccount", account)
    bound_roles = {
        b["roleRef"]["name"]
        for b in overlay
        if b["kind"] == "RoleBinding"
        and {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in b["subjects"]
    }
    assert bound_roles == {"dewpoint-pipeline-executor", "dewpoint-pipeline-deploy"}


def test_workflow_pods_pass_restricted_with_our_executor(
    argo: list[dict], workflow_template: dict
) -> None:
    executor = yaml.safe_load(
        find(argo, "ConfigMap", "workflow-controller-configmap")["data"]["executor"]
    )
    pod_sc = workflow_template["spec"]["securityContext"]
    templates = [t for t in workflow_template["spec"]["templates"] if "container" in t]
    # Every pod of the workflow, checked: the parameter check and each pipeline stage.
    # Every stage's template, and the current year's fetch and validate (the same steps).
    stages = [s.name for s in (CHECK_PARAMETERS, *PIPELINE)]
    assert [t["name"] for t in templates] == [
        *stages[:3],
        "fetch-current",
        "validate-current",
        *stages[3:],
    ]
    for t in templates:
        pod = {
            "securityContext": pod_sc,
            "containers": [{"name": t["name"], **t["container"]}],
            "volumes": t.get("volumes", []),
        }
        injected = [{"name": "init", **executor}, {"name": "wait", **executor}]
        assert restricted_violations(pod, injected) == [], t["name"]


def test_artifact_repository_is_the_one_the_workflow_template_names(
    overlay: list[dict], workflow_template: dict
) -> None:
    ref = workflow_template["spec"]["artifactRepositoryRef"]
    cm = find(overlay, "ConfigMap", ref["configMap"])
    annotation = "workflows.argoproj.io/default-artifact-repository"
    assert cm["metadata"]["annotations"][annotation] == ref["key"]
    s3 = yaml.safe_load(cm["data"][ref["key"]])["s3"]
    host, _, port = s3["endpoint"].partition(":")
    assert host == f"seaweedfs.{NAMESPACE}.svc"
    service = find(overlay, "Service", "seaweedfs")
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert s3["insecure"] is True
    assert s3["accessKeySecret"]["name"] == s3["secretKeySecret"]["name"] == "seaweedfs-s3"


def test_in_cluster_tracking_uri_reaches_mlflow_and_passes_its_host_check(
    overlay: list[dict], workflow_template: dict
) -> None:
    params = {
        p["name"]: p.get("value") for p in workflow_template["spec"]["arguments"]["parameters"]
    }
    uri = params["mlflow-tracking-uri"]
    match = re.fullmatch(r"http://([a-z0-9.-]+):(\d+)", uri)
    assert match, f"{uri}: MLflow runs without --static-prefix, so the URI has no path"
    host, port = match.groups()
    assert host.split(".")[0] == "mlflow" and host.split(".")[1] == NAMESPACE
    service = find(overlay, "Service", "mlflow")
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    args = find(overlay, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    flags = dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)
    allowed = flags["allowed-hosts"].split(",")
    assert f"{host}:{port}" in allowed and "localhost" in allowed and "localhost:80" in allowed
    model_server = find(overlay, "Deployment", "model-server")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in model_server["containers"][0]["env"]}
    assert f"{urlhost(env['MLFLOW_TRACKING_URI'])}" in allowed


def urlhost(url: str) -> str:
    """`host:port` of an http(s) URL."""
    return url.split("://", 1)[1].split("/", 1)[0]


def test_mlflow_server_proxies_artifacts_to_its_volume_and_uses_postgres(
    overlay: list[dict],
) -> None:
    pod = find(overlay, "Deployment", "mlflow")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert "--serve-artifacts" in c["args"]
    assert "--cors-allowed-origins=http://localhost" in c["args"]
    assert not any(a.startswith("--static-prefix") for a in c["args"])
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes[mounts["/mlartifacts"]]["persistentVolumeClaim"]["claimName"] == "mlflow-artifacts"
    )
    env = {e["name"]: e for e in c["env"]}
    uri = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri.startswith("postgresql+psycopg://")
    assert "@postgres.mlops.svc:5432/mlflow" in uri
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in c["args"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"


def cpu(quantity: str) -> float:
    """A Kubernetes CPU quantity (`500m`, `1`) in cores."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_model_server_matches_the_deploy_step(
    overlay: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    from steps.deploy_targets import kubernetes as k8s_target
    from steps.serving import recommended_serve_command
    from steps.stages import DEPLOY

    dep = find(overlay, "Deployment", "model-server")
    assert dep["spec"]["replicas"] == 0, "nothing to serve until the first deploy"
    # The deploy step owns the live Deployment: `make kind-up` must never re-apply it.
    create_only = [
        o["metadata"]["name"]
        for o in overlay
        if o["metadata"].get("labels", {}).get("dewpoint-pipeline/apply") == "create-only"
    ]
    assert create_only == ["model-server"]
    up = (KIND / "up.sh").read_text()
    assert "-k kind/overlays/kind -l 'dewpoint-pipeline/apply!=create-only'" in up
    assert "create -k kind/overlays/kind -l 'dewpoint-pipeline/apply=create-only'" in up
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["name"] == "model-server"
    argv, _ = recommended_serve_command(
        "$(MODEL_URI)",
        host="0.0.0.0",
        port=8080,
        workers=math.ceil(cpu(c["resources"]["limits"]["cpu"])),
    )
    assert [c["command"][0], *c["args"]] == [Path(argv[0]).name, *argv[1:]]
    assert "MODEL_URI" in {e["name"] for e in c["env"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/ping"
    monkeypatch.delenv("POD_NAMESPACE", raising=False)  # the parser's env fallback
    args = DEPLOY.parse(["--target", "kubernetes", "--version", "1"])
    assert (args.namespace, args.deployment) == (NAMESPACE, "model-server")
    assert set(k8s_target.ANNOTATION_KEYS.values()) == {
        "dewpoint-pipeline/model-version",
        "dewpoint-pipeline/run-id",
        "dewpoint-pipeline/workflow-uid",
    }
    service = find(overlay, "Service", "model-server")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"}]


def test_model_server_rollout_refuses_no_request(overlay: list[dict]) -> None:
    """The manifest's part of a redeploy with no refused request: a new pod takes traffic only
    once /ping answers (the model is loaded), the old one goes only after that, and a pod being
    replaced keeps answering until the endpoints have moved and every request it accepted has
    had its full --timeout."""
    dep = find(overlay, "Deployment", "model-server")
    strategy = dep["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ready = c["readinessProbe"]
    assert ready["httpGet"] == {"path": "/ping", "port": "http"}
    assert {"name": "http", "containerPort": 8080} in c["ports"]
    assert "exec" not in ready and "tcpSocket" not in ready  # /ping: the model is loaded

    drain = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert drain >= 5, "endpoint removal needs a few seconds to reach Traefik and kube-proxy"
    request_timeout = int(c["args"][c["args"].index("--timeout") + 1])
    assert pod["terminationGracePeriodSeconds"] >= drain + request_timeout
    # SIGTERM is no stop signal here: `mlflow` is the container's first process (PID 1).
    assert c["command"] == ["mlflow"]
    assert "shareProcessNamespace" not in pod


# ---- RBAC --------------------------------------------------------------------------------------


def test_rbac_has_no_wildcards_and_no_cluster_scope(everything: list[dict]) -> None:
    for obj in everything:
        assert obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"), obj["metadata"]["name"]
        for rule in obj.get("rules", []):
            for field in ("verbs", "resources", "apiGroups", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{obj['metadata']['name']}: {rule}"


def test_roles_grant_exactly_what_each_account_needs(overlay: list[dict]) -> None:
    def rules(name: str) -> list[dict]:
        return find(overlay, "Role", name)["rules"]

    assert rules("dewpoint-pipeline-executor") == [
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflowtaskresults"],
            "verbs": ["create", "patch"],
        }
    ]
    assert rules("dewpoint-pipeline-deploy") == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": ["model-server"],
            "verbs": ["get", "patch"],
        }
    ]

    def grants(role: str) -> dict[tuple[str, str, str], set[str]]:
        return {
            (group, resource, ",".join(rule.get("resourceNames", []))): set(rule["verbs"])
            for rule in rules(role)
            for group in rule["apiGroups"]
            for resource in rule["resources"]
        }

    # The operator (make argo-token) runs the installed template and reads; it writes no
    # template or cron, so with workflowRestrictions it cannot run pods of its own.
    assert grants("pipeline-operator") == {
        ("argoproj.io", "workflows", ""): {"get", "list", "watch", "create"},
        ("argoproj.io", "workflowtemplates", ""): {"get", "list", "watch"},
        ("argoproj.io", "cronworkflows", ""): {"get", "list", "watch"},
        ("", "pods", ""): {"get", "list", "watch"},
        ("", "pods/log", ""): {"get"},
    }
    # The publisher (make publish, 10-minute tokens only) installs the template and the cron.
    assert grants("pipeline-publisher") == {
        ("argoproj.io", "workflowtemplates", ""): {"get", "list", "watch", "create", "update"},
        ("argoproj.io", "cronworkflows", ""): {"get", "list", "watch", "create", "update"},
        ("argoproj.io", "cronworkflows", "dewpoint-pipeline-weekly"): {"delete"},
    }
    long_lived = {
        o["metadata"]["annotations"]["kubernetes.io/service-account.name"]
        for o in overlay
        if o["kind"] == "Secret" and o.get("type") == "kubernetes.io/service-account-token"
    }
    assert long_lived == {"pipeline-operator"}
    token = find(overlay, "Secret", "pipeline-operator-token")
    assert token["type"] == "kubernetes.io/service-account-token"
    assert (
        token["metadata"]["annotations"]["kubernetes.io/service-account.name"]
        == "pipeline-operator"
    )


def test_every_secret_a_pod_reads_is_created_by_up_sh_or_shipped(overlay: list[dict]) -> None:
    up = (KIND / "up.sh").read_text()
    created = set(re.findall(r"create secret generic ([a-z0-9-]+)", up))
    created |= set(re.findall(r"^mlflow_user ([a-z0-9-]+) ", up, flags=re.M))
    shipped = {o["metadata"]["name"] for o in overlay if o["kind"] == "Secret"}
    referenced = set()
    for _, pod in pod_templates(overlay):
        for v in pod.get("volumes", []):
            if "secret" in v:
                referenced.add(v["secret"]["secretName"])
        for c in all_containers(pod):
            for e in c.get("env", []):
                if "secretKeyRef" in e.get("valueFrom", {}):
                    referenced.add(e["valueFrom"]["secretKeyRef"]["name"])
    referenced.add("seaweedfs-s3")  # by the artifact repository ConfigMap
    assert referenced == {
        "mlflow-postgres",
        "seaweedfs-s3",
        "mlflow-admin",
        "mlflow-pipeline",
        "mlflow-model-server",
        "mlflow-viewer",
    }
    assert referenced <= created | shipped
    # The workflow steps' MLflow user, read by the WorkflowTemplate (workflows/pipeline.py).
    from workflows.pipeline import MLFLOW_CREDENTIALS_SECRET

    assert MLFLOW_CREDENTIALS_SECRET in created


# ---- ingress and network -----------------------------------------------------------------------


def test_ingress_routes_reach_existing_services_through_existing_middlewares(
    everything: list[dict],
) -> None:
    routes = {}
    for ing in (o for o in everything if o["kind"] == "Ingress"):
        ns = ing["metadata"]["namespace"]
        assert ing["spec"]["ingressClassName"] == "traefik"
        (rule,) = ing["spec"]["rules"]
        assert "host" not in rule, "served on any host name, e.g. http://localhost"
        (path,) = rule["http"]["paths"]
        backend = path["backend"]["service"]
        service = find(everything, "Service", backend["name"], ns)
        ports = backend["port"]
        assert any(
            p.get("name") == ports.get("name") or p["port"] == ports.get("number")
            for p in service["spec"]["ports"]
        )
        chain = ing["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"]
        strips = []
        for ref in chain.split(","):
            assert ref.endswith("@kubernetescrd") and ref.startswith(f"{ns}-"), ref
            mw = find(
                everything, "Middleware", ref.removesuffix("@kubernetescrd")[len(ns) + 1 :], ns
            )
            strips += mw["spec"].get("stripPrefix", {}).get("prefixes", [])
        assert strips == [path["path"]], "the prefix is stripped before the backend sees it"
        routes[path["path"]] = (ns, backend["name"])
    assert routes == {
        "/argo": ("argo", "argo-server"),
        "/mlflow": (NAMESPACE, "mlflow"),
        "/model": (NAMESPACE, "model-server"),
    }


def middleware_chain(objects: list[dict], ingress: str, namespace: str) -> list[dict]:
    """The Middleware objects an Ingress's Traefik router applies, in order."""
    ing = find(objects, "Ingress", ingress, namespace)
    chain = ing["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"]
    return [
        find(objects, "Middleware", ref.removesuffix("@kubernetescrd")[len(namespace) + 1 :])
        for ref in chain.split(",")
    ]


def test_model_route_refuses_request_bodies_over_the_served_models_limit(
    overlay: list[dict],
) -> None:
    """In front of the model server, Traefik's Buffering middleware refuses (413) the bodies the
    server itself refuses: the same byte limit, first in the model route's chain."""
    from steps.served_model import MAX_REQUEST_BODY_BYTES

    chain = middleware_chain(overlay, "model-server", NAMESPACE)
    assert chain[0]["spec"] == {"buffering": {"maxRequestBodyBytes": MAX_REQUEST_BODY_BYTES}}
    assert [mw for mw in chain[1:] if "buffering" in mw["spec"]] == []
    # Only the model route: MLflow takes model artifact uploads far larger than one request.
    assert not any(
        "buffering" in mw["spec"] for mw in middleware_chain(overlay, "mlflow", NAMESPACE)
    )


def test_network_policies_deny_by_default_and_allow_only_ports_that_exist(
    overlay: list[dict],
) -> None:
    policies = [o for o in overlay if o["kind"] == "NetworkPolicy"]
    deny = find(overlay, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    pods = {
        pod_labels["app.kubernetes.io/name"]: pod
        for o in overlay
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
        for pod_labels, pod in [
            (o["spec"]["template"]["metadata"]["labels"], o["spec"]["template"]["spec"])
        ]
    }
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                name = (
                    peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                )
                if name is None:
                    continue
                assert name in pods, f"{policy['metadata']['name']}: no pod {name}"
                open_ports = {
                    p["containerPort"] for c in pods[name]["containers"] for p in c.get("ports", [])
                }
                for port in rule.get("ports", []):
                    assert port["port"] in open_ports, (
                        f"{policy['metadata']['name']} -> {name}:{port['port']}"
                    )
    # Every pod of ours is named by at least one explicit policy besides the defaults.
    selected = {
        p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for p in policies
    }
    assert set(pods) <= selected


# ---- kind, Traefik, versions, scripts ----------------------------------------------------------


def test_kind_cluster_pins_its_node_image_and_binds_loopback_only() -> None:
    config = yaml.safe_load((KIND / "cluster.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == versions()["CLUSTER_NAME"]
    (node,) = config["nodes"]
    assert DIGEST_PINNED.match(node["image"]), node["image"]
    assert node["image"].startswith("kindest/node:v1.37.")
    assert node["labels"] == {"ingress-ready": "true"}
    mappings = {m["hostPort"]: m for m in node["extraPortMappings"]}
    assert set(mappings) == {80, 443}
    assert all(m["listenAddress"] == "127.0.0.1" for m in mappings.values())
    values = yaml.safe_load((KIND / "traefik-values.yaml").read_text())
    assert mappings[80]["containerPort"] == values["ports"]["web"]["nodePort"]
    assert mappings[443]["containerPort"] == values["ports"]["websecure"]["nodePort"]
    assert values["nodeSelector"] == node["labels"]


def test_traefik_values_serve_ingresses_of_class_traefik_without_host_ports() -> None:
    values = yaml.safe_load((KIND / "traefik-values.yaml").read_text())
    assert values["ingressClass"]["name"] == "traefik"
    assert values["providers"]["kubernetesIngress"]["enabled"] is True
    assert values["providers"]["kubernetesCRD"]["enabled"] is True
    assert values["service"]["spec"]["type"] == "NodePort"
    assert not any("hostPort" in port for port in values["ports"].values())
    pod = {
        "securityContext": values["podSecurityContext"],
        "containers": [{"name": "traefik", "securityContext": values["securityContext"]}],
    }
    assert restricted_violations(pod) == []
    assert {"cpu", "memory"} <= set(values["resources"]["limits"])


def test_versions_and_tool_checksums_are_pinned() -> None:
    v = versions()
    assert re.fullmatch(r"v0\.33\.0", v["KIND_VERSION"])
    assert re.fullmatch(r"v4\.1\.\d+", v["ARGO_WORKFLOWS_VERSION"])
    assert re.fullmatch(r"41\.\d+\.\d+", v["TRAEFIK_CHART_VERSION"])
    for key in ("KUBECTL_VERSION", "HELM_VERSION"):
        assert re.fullmatch(r"v\d+\.\d+\.\d+", v[key]), key
    rows = [
        line.split()
        for line in (KIND / "tools.sha256").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pinned = {(tool, version, platform) for tool, version, platform, sha, *_ in rows}
    assert all(HEX64.match(row[3]) for row in rows)
    for tool, key in (
        ("kind", "KIND_VERSION"),
        ("kubectl", "KUBECTL_VERSION"),
        ("helm", "HELM_VERSION"),
    ):
        for platform in ("linux/amd64", "linux/arm64"):
            assert (tool, v[key], platform) in pinned


@pytest.mark.parametrize("script", sorted(p.name for p in KIND.glob("*.sh")))
def test_scripts_are_strict_bash_that_parses(script: str) -> None:
    path = KIND / script
    text = path.read_text()
    if script != "lib.sh":  # sourced, inherits the caller's options
        assert "set -euo pipefail" in text
        assert os.access(path, os.X_OK), f"{script} is not executable"
    assert " sed " not in text, "no text substitution of manifests"
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_optional_bigquery_credentials_secret_is_documented() -> None:
    from workflows.pipeline import GOOGLE_CREDENTIALS_SECRET

    docs = (REPO / "docs" / "cluster.md").read_text()
    assert f"create secret generic {GOOGLE_CREDENTIALS_SECRET}" in docs
    assert "key.json=" in docs


def test_readme_version_table_matches_what_is_pinned(overlay: list[dict]) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## Cluster") :]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else None]
    rows = dict(re.findall(r"^\| ([A-Za-z][\w ]+?) \| (.+?) \|$", section, flags=re.M))
    v = versions()
    node_image = yaml.safe_load((KIND / "cluster.yaml").read_text())["nodes"][0]["image"]
    images = {c["image"] for _, pod in pod_templates(overlay) for c in all_containers(pod)}
    with (REPO / "pyproject.toml").open("rb") as f:
        deps = dict(d.split("==") for d in tomllib.load(f)["project"]["dependencies"])
    assert rows["kind"] == v["KIND_VERSION"]
    assert rows["node image"] == f"`{node_image}`"
    assert rows["Helm"] == v["HELM_VERSION"]
    assert rows["Argo Workflows"] == v["ARGO_WORKFLOWS_VERSION"]
    assert rows["Traefik Helm chart"].startswith(v["TRAEFIK_CHART_VERSION"] + " ")
    assert rows["PostgreSQL"].strip("`") in images
    assert rows["SeaweedFS"].strip("`") in images
    assert rows["MLflow"].startswith(deps["mlflow"] + " ")
    assert rows["Hera"] == deps["hera"]


# ---- MLflow itself, as the manifests run it -----------------------------------------------------


def container_args(overlay: list[dict], deployment: str) -> list[str]:
    """The args of the single container of a Deployment (whose command is `mlflow`)."""
    (c,) = find(overlay, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["mlflow"]
    return c["args"]


def test_mlflow_cli_accepts_the_manifest_arguments(overlay: list[dict]) -> None:
    import mlflow.cli
    from mlflow.models.cli import commands as model_commands

    args = container_args(overlay, "mlflow")
    assert args[0] == "server"
    params = mlflow.cli.server.make_context("server", args[1:]).params
    assert params["serve_artifacts"] is True
    assert params["artifacts_destination"] == "/mlartifacts"
    assert params["static_prefix"] is None
    serve = container_args(overlay, "model-server")
    assert serve[:2] == ["models", "serve"]
    params = model_commands.commands["serve"].make_context("serve", serve[2:]).params
    assert (params["model_uri"], params["host"], params["port"]) == (
        "$(MODEL_URI)",
        "0.0.0.0",
        8080,
    )
    assert params["env_manager"] == "local"


class StripPrefixProxy:
    """What Traefik does for /mlflow: redirect `/mlflow` to `/mlflow/`, strip `/mlflow`, pass the
    request on with the client's Host header (`localhost`, as for http://localhost)."""

    def __init__(self, prefix: str, upstream: str):
        import http.server
        import threading

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                if self.path == prefix:
                    self.send_response(301)
                    self.send_header("Location", prefix + "/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if not self.path.startswith(prefix + "/"):
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                headers["Host"] = "localhost"
                headers["Accept-Encoding"] = "identity"
                upstream_response = httpx.request(
                    self.command,
                    upstream + self.path[len(prefix) :],
                    headers=headers,
                    content=body,
                    timeout=HTTP_TIMEOUT,
                )
                proxy.seen_paths.append(self.path[len(prefix) :])
                self.send_response(upstream_response.status_code)
                for k, v in upstream_response.headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(upstream_response.content)))
                self.end_headers()
                self.wfile.write(upstream_response.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.seen_paths: list[str] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_mlflow_with_our_flags_works_behind_the_stripped_prefix(
    overlay: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real MLflow server with the manifest's flags (store and paths made local), behind a
    /mlflow-stripping proxy: the UI's assets resolve, a client logs and reads back an artifact
    through the proxy, and the allowed-hosts check admits in-cluster names and rejects others.
    The server runs the Deployment's basic-auth app with its environment; the test is the admin."""
    import mlflow

    from tests.conftest import free_port, mlflow_executable, wait_http_ok
    from tests.mlflow_auth_env import ADMIN, client_env, generated_secrets, server_env

    local = ("--host=", "--port=", "--backend-store-uri=", "--artifacts-destination=")
    kept = [a for a in container_args(overlay, "mlflow")[1:] if not a.startswith(local)]
    port = free_port()
    generated = generated_secrets()
    admin = client_env(generated, ADMIN)
    auth = (admin["MLFLOW_TRACKING_USERNAME"], admin["MLFLOW_TRACKING_PASSWORD"])
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            mlflow_executable(),
            "server",
            *kept,
            "--host=127.0.0.1",
            f"--port={port}",
            f"--backend-store-uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"--artifacts-destination={tmp_path / 'artifacts'}",
        ],
        env=server_env(tmp_path, generated),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proxy = StripPrefixProxy("/mlflow", f"http://127.0.0.1:{port}")
    try:
        upstream = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{upstream}/health", timeout=180, proc=proc)
        search = "/api/2.0/mlflow/experiments/search?max_results=1"
        for host in ("mlflow.mlops.svc:5000", "mlflow:5000", "localhost"):
            assert (
                httpx.get(
                    upstream + search, headers={"Host": host}, auth=auth, timeout=HTTP_TIMEOUT
                ).status_code
                == 200
            ), host
        assert (
            httpx.get(
                upstream + search, headers={"Host": "evil.example"}, auth=auth, timeout=HTTP_TIMEOUT
            ).status_code
            == 403
        )
        # The kubelet probes with the pod IP as Host: /health is exempt from the check.
        assert (
            httpx.get(
                f"{upstream}/health",
                headers={"Host": "10.244.0.7:5000"},
                auth=auth,
                timeout=HTTP_TIMEOUT,
            ).status_code
            == 200
        )

        assert (
            httpx.get(f"{proxy.url}/mlflow", auth=auth, timeout=HTTP_TIMEOUT).headers["location"]
            == "/mlflow/"
        )
        page = httpx.get(f"{proxy.url}/mlflow/", auth=auth, timeout=HTTP_TIMEOUT)
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
        assert assets and not any(a.startswith("/") for a in assets), "relative asset URLs"
        for asset in assets:
            assert (
                httpx.get(
                    f"{proxy.url}/mlflow/{asset.removeprefix('./')}",
                    auth=auth,
                    timeout=HTTP_TIMEOUT,
                ).status_code
                == 200
            )

        for key, value in admin.items():
            monkeypatch.setenv(key, value)
        client = mlflow.MlflowClient(tracking_uri=f"{proxy.url}/mlflow")
        experiment = client.create_experiment("behind-the-ingress")
        run = client.create_run(experiment)
        (tmp_path / "note.txt").write_text("through the proxy")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        fetched = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "dl"))
        assert Path(fetched).read_text() == "through the proxy"
        assert any(p.startswith("/api/2.0/mlflow-artifacts/") for p in proxy.seen_paths)
    finally:
        proxy.close()
        if proc.poll() is None:
            stop_process_group(proc.pid)


@pytest.mark.slow
def test_smoke_script_predicts_through_a_stripped_model_prefix(tmp_path: Path) -> None:
    """kind/smoke.sh against the real scoring server (the manifest's command, our served model)
    behind a /model-stripping proxy, as Traefik serves it at http://localhost/model/."""
    import mlflow
    import pandas as pd

    from steps.model import LinearCoefficients, log_served_model
    from steps.serving import recommended_serve_command
    from steps.settings import MlflowSettings
    from steps.tracking import mlflow_session
    from tests.conftest import free_port, wait_http_ok

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # mlflow_session restores MLflow's global tracking URI and environment afterwards.
    # Its own experiment: an active experiment id left by an earlier test (MLflow keeps it in a
    # global) names nothing in this fresh store, and the default would write to ./mlruns.
    with mlflow_session(MlflowSettings(tracking_uri)):
        experiment = mlflow.create_experiment("smoke", artifact_location=tmp_path.as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            log_served_model(LinearCoefficients(0.9, -9.0), pd.DataFrame({"temp": [50.0]}))
    port = free_port()
    argv, env = recommended_serve_command(
        f"runs:/{run.info.run_id}/model",
        port=port,
        workers=1,
        base_env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
    )
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    proxy = StripPrefixProxy("/model", f"http://127.0.0.1:{port}")
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/ping", timeout=180, proc=proc)
        out = subprocess.run(
            [str(KIND / "smoke.sh")],
            env={**os.environ, "SMOKE_URL": proxy.url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        # 0.9 * 12.8 - 9 and 0.9 * 68 - 9
        assert "ok: dew point 2.5 F at 12.8 F, 52.2 F at 68.0 F" in out.stdout
        assert proxy.seen_paths == ["/invocations"]
        # And a failure is reported as one: nothing listens behind this URL.
        dead = subprocess.run(
            [str(KIND / "smoke.sh")],
            env={**os.environ, "SMOKE_URL": f"http://127.0.0.1:{free_port()}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert dead.returncode != 0 and dead.stderr.startswith("error: cannot reach"), dead.stderr
    finally:
        proxy.close()
        if proc.poll() is None:
            stop_process_group(proc.pid)


# ---- per-step egress ---------------------------------------------------------------------------


NAMESPACE_LABEL = "kubernetes.io/metadata.name"


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy podSelector (matchLabels, matchExpressions) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        if expr["operator"] == "Exists" and not present:
            return False
        if expr["operator"] == "DoesNotExist" and present:
            return False
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def egress_of(overlay: list[dict], labels: dict[str, str]) -> list[dict]:
    """Every egress rule that applies to a pod with `labels` (NetworkPolicies add up)."""
    return [
        rule
        for p in overlay
        if p["kind"] == "NetworkPolicy" and selects(p["spec"]["podSelector"], labels)
        for rule in p["spec"].get("egress", [])
    ]


def test_only_fetch_reaches_out_and_only_deploy_reaches_the_model_server(
    overlay: list[dict], workflow_template: dict
) -> None:
    """Per step, from the labels the template gives its pods: fetch may open TCP 443 anywhere
    (HTTPS data sources), deploy may call the model server, every step reaches MLflow, SeaweedFS
    and only the Kubernetes API's own addresses (a placeholder here, set by kind/up.sh)."""
    from workflows.pipeline import STEP_LABEL

    steps = [t for t in workflow_template["spec"]["templates"] if "container" in t]
    for template in steps:
        step = template["metadata"]["labels"][STEP_LABEL]
        # The step the pod runs (fetch-current is fetch: the same egress).
        assert step == template["container"]["command"][-1]
        rules = egress_of(overlay, {"workflows.argoproj.io/workflow": "wf-1", STEP_LABEL: step})
        anywhere = {p["port"] for r in rules if "to" not in r for p in r["ports"]}
        blocks = {
            peer["ipBlock"]["cidr"] for r in rules for peer in r.get("to", []) if "ipBlock" in peer
        }
        apps = {
            (
                peer.get("namespaceSelector", {}).get("matchLabels", {}).get(NAMESPACE_LABEL),
                *sorted(peer["podSelector"]["matchLabels"].values()),
            )
            for r in rules
            for peer in r.get("to", [])
            if "podSelector" in peer
        }
        assert anywhere == ({443} if step == "fetch" else set()), step
        assert blocks == {"192.0.2.1/32"}, step
        wanted = {(None, "mlflow"), (None, "seaweedfs"), ("kube-system", "kube-dns")}
        if step == "deploy":
            wanted.add((None, "model-server"))
        assert apps == wanted, step
    server = find(overlay, "NetworkPolicy", "model-server")["spec"]["ingress"]
    (rule,) = server
    workflow_peers = [p for p in rule["from"] if "podSelector" in p]
    assert workflow_peers and all(
        p["podSelector"]["matchLabels"] == {STEP_LABEL: "deploy"} for p in workflow_peers
    )


def test_the_controller_may_keep_exactly_the_templates_memoization_caches(
    overlay: list[dict], workflow_template: dict
) -> None:
    """Every `memoize.cache.configMap` of the rendered template is a ConfigMap the workflow
    controller (ServiceAccount argo/argo) may update in mlops, and it may update no other one."""
    caches = sorted(
        {
            t["memoize"]["cache"]["configMap"]["name"]
            for t in workflow_template["spec"]["templates"]
            if "memoize" in t
        }
    )
    assert len(caches) == 2
    role = find(overlay, "Role", "argo-memoization-cache")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": caches,
         "verbs": ["get", "update"]},
    ]  # fmt: skip
    binding = find(overlay, "RoleBinding", "argo-memoization-cache")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"]["name"] == "argo-memoization-cache"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "argo", "namespace": "argo"}]
