"""Hera builders for the pipeline's Argo resources: one `build_*` per resource, plus `render`.

Every task runs `python -m steps <stage> ...` exactly as docs/steps.md specifies; all I/O lives
under `/work` so the root filesystem can be read-only and the local runner can remap one directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hera.workflows import (
    DAG,
    Artifact,
    Container,
    CronWorkflow,
    EmptyDirVolume,
    Env,
    FieldEnv,
    NoneArchiveStrategy,
    Parameter,
    Resources,
    RetryStrategy,
    SecretVolume,
    Task,
    Workflow,
    WorkflowTemplate,
)
from hera.workflows import models as m

from workflows.settings import PipelineSettings

TEMPLATE_NAME = "dewpoint-pipeline"
CRON_NAME = "dewpoint-pipeline-weekly"
ENTRYPOINT = "pipeline"
# One lock name per namespace: Argo scopes mutexes to the namespace of the workflow.
MUTEX_NAME = "dewpoint-pipeline-release"
ARTIFACT_REPOSITORY_CONFIGMAP = "artifact-repositories"
GOOGLE_CREDENTIALS_SECRET = "google-credentials"
GOOGLE_CREDENTIALS_DIR = "/var/run/secrets/google"
CONTAINER_USER = 10001

WORK = "/work"
IN = f"{WORK}/in"
OUT = f"{WORK}/out"
OUTPUTS_DIR = f"{WORK}/outputs"


@dataclass(frozen=True)
class WorkflowParameter:
    """One user-facing workflow parameter (kebab-case, as Argo shows it)."""

    name: str
    default: str
    description: str
    enum: tuple[str, ...] | None = None


def workflow_parameters(settings: PipelineSettings) -> list[WorkflowParameter]:
    """The workflow parameters and their defaults; `-p name=value` overrides them per run."""
    return [
        WorkflowParameter(
            "source",
            "gsod",
            "where fetch reads data",
            ("gsod", "bigquery", "table", "synthetic"),
        ),
        WorkflowParameter("years", "", "GSOD years, comma list; empty = last and this year"),
        WorkflowParameter("stations", "", "GSOD station ids, comma list; empty = all stations"),
        WorkflowParameter(
            "gsod-base-url",
            "https://www.ncei.noaa.gov/data/global-summary-of-the-day",
            "GSOD archive base URL",
        ),
        WorkflowParameter("table-uri", "", "table source: CSV or Parquet path or URL"),
        WorkflowParameter("column-map", "", "table source: temp=TEMP,dewp=DEWP,... (ours=theirs)"),
        WorkflowParameter("synthetic-rows", "1000", "synthetic source: number of rows"),
        WorkflowParameter(
            "rain-only", "false", "keep only rain/drizzle days (the prototype's filter)"
        ),
        WorkflowParameter("model-type", "linear", "regression model", ("linear", "elasticnet")),
        WorkflowParameter("model-name", "dewpoint-lr", "registered model name in MLflow"),
        WorkflowParameter(
            "gate-tolerance", "0.0", "deg F of RMSE a new model may be worse than the champion"
        ),
        WorkflowParameter(
            "deploy-target", "kubernetes", "where the champion is served", ("local", "kubernetes")
        ),
        WorkflowParameter("serving-deployment", "model-server", "Deployment serving the model"),
        WorkflowParameter("mlflow-tracking-uri", settings.mlflow_tracking_uri, "MLflow server"),
    ]


# Requests sized from the prototype's runs; limits leave room for pandas/sklearn peaks.
_SMALL = Resources(cpu_request="100m", cpu_limit="1", memory_request="256Mi", memory_limit="1Gi")
_LARGE = Resources(cpu_request="500m", cpu_limit="2", memory_request="512Mi", memory_limit="2Gi")


def _network_retry() -> RetryStrategy:
    """Retries for steps that talk to the network (NOAA, MLflow, the Kubernetes API)."""
    return RetryStrategy(
        limit=3,  # an int: Argo accepts IntOrString (its JSON schema says string only)
        retry_policy="Always",
        backoff=m.Backoff(duration="30s", factor=m.IntOrString(2), max_duration="10m"),
    )


def _container_security() -> m.SecurityContext:
    """Container-level settings required by Pod Security `restricted`."""
    return m.SecurityContext(
        allow_privilege_escalation=False,
        capabilities=m.Capabilities(drop=["ALL"]),
        read_only_root_filesystem=True,
        run_as_non_root=True,
    )


def _pod_security() -> m.PodSecurityContext:
    """Pod-level settings required by Pod Security `restricted` (UID/GID 10001, see docs)."""
    return m.PodSecurityContext(
        run_as_non_root=True,
        run_as_user=CONTAINER_USER,
        run_as_group=CONTAINER_USER,
        fs_group=CONTAINER_USER,
        seccomp_profile=m.SeccompProfile(type="RuntimeDefault"),
    )


def _inputs(*names: str) -> list[Parameter]:
    return [Parameter(name=name) for name in names]


def _outputs(*names: str) -> list[Parameter]:
    return [
        Parameter(name=name, value_from=m.ValueFrom(path=f"{OUTPUTS_DIR}/{name}")) for name in names
    ]


def _artifact_out(name: str, path: str) -> Artifact:
    # Parquet, PNG and JSON gain nothing from tar+gzip and stay readable in the artifact store.
    return Artifact(name=name, path=path, archive=NoneArchiveStrategy())


def _arg(name: str) -> str:
    return "{{inputs.parameters." + name + "}}"


def _tracking_env() -> list[Env]:
    return [Env(name="MLFLOW_TRACKING_URI", value=_arg("mlflow-tracking-uri"))]


def _step(
    settings: PipelineSettings,
    stage: str,
    flags: list[str],
    *,
    inputs: list[Parameter | Artifact] | None = None,
    outputs: list[Parameter | Artifact] | None = None,
    env: list[Env | FieldEnv] | None = None,
    resources: Resources = _SMALL,
    deadline_seconds: int = 600,
    network: bool = False,
    extra_volumes: list[SecretVolume] | None = None,
) -> Container:
    """A Container template running one stage of docs/steps.md with the shared pod settings."""
    volumes = [
        EmptyDirVolume(name="work", mount_path=WORK),
        # emptyDir /tmp: matplotlib, MLflow and pip-less Python all want a writable temp dir.
        EmptyDirVolume(name="tmp", mount_path="/tmp"),
        *(extra_volumes or []),
    ]
    return Container(
        name=stage,
        image=settings.image,
        image_pull_policy=settings.image_pull_policy,
        command=["python", "-m", "steps", stage],
        args=[*flags, "--outputs-dir", OUTPUTS_DIR],
        inputs=inputs,
        outputs=outputs,
        env=[Env(name="HOME", value="/tmp"), *(env or [])],
        resources=resources,
        security_context=_container_security(),
        volumes=volumes,
        active_deadline_seconds=deadline_seconds,
        retry_strategy=_network_retry() if network else None,
    )


def _templates(settings: PipelineSettings) -> dict[str, Container]:
    """The six stage templates, keyed by stage name."""
    fetch = _step(
        settings,
        "fetch",
        [
            "--source",
            _arg("source"),
            "--years",
            _arg("years"),
            "--stations",
            _arg("stations"),
            "--base-url",
            _arg("gsod-base-url"),
            "--table-uri",
            _arg("table-uri"),
            "--column-map",
            _arg("column-map"),
            "--rows",
            _arg("synthetic-rows"),
            "--output",
            f"{OUT}/dataset.parquet",
        ],
        inputs=_inputs(
            "source",
            "years",
            "stations",
            "gsod-base-url",
            "table-uri",
            "column-map",
            "synthetic-rows",
        ),
        outputs=[
            *_outputs("row-count", "data-hash"),
            _artifact_out("dataset", f"{OUT}/dataset.parquet"),
        ],
        # Only the bigquery source reads the key; the Secret volume is `optional`, so pods of the
        # other sources start without it (create Secret `google-credentials`, key `key.json`).
        env=[
            Env(name="GOOGLE_APPLICATION_CREDENTIALS", value=f"{GOOGLE_CREDENTIALS_DIR}/key.json")
        ],
        deadline_seconds=1800,
        network=True,
        extra_volumes=[
            SecretVolume(
                name="google-credentials",
                secret_name=GOOGLE_CREDENTIALS_SECRET,
                optional=True,
                mount_path=GOOGLE_CREDENTIALS_DIR,
                read_only=True,
            )
        ],
    )
    validate = _step(
        settings,
        "validate",
        [
            "--input",
            f"{IN}/dataset.parquet",
            "--output",
            f"{OUT}/validated.parquet",
            "--report",
            f"{OUT}/validation.json",
            "--rain-only",
            _arg("rain-only"),
        ],
        inputs=[*_inputs("rain-only"), Artifact(name="dataset", path=f"{IN}/dataset.parquet")],
        outputs=[
            *_outputs("row-count", "dropped-rows"),
            _artifact_out("validated", f"{OUT}/validated.parquet"),
            _artifact_out("validation-report", f"{OUT}/validation.json"),
        ],
    )
    train = _step(
        settings,
        "train",
        [
            "--input",
            f"{IN}/validated.parquet",
            "--holdout-out",
            f"{OUT}/holdout.parquet",
            "--plot-out",
            f"{OUT}/fit.png",
            "--model-type",
            _arg("model-type"),
            "--data-hash",
            _arg("data-hash"),
            "--data-source",
            _arg("source"),
        ],
        inputs=[
            *_inputs("model-type", "data-hash", "source", "mlflow-tracking-uri"),
            Artifact(name="validated", path=f"{IN}/validated.parquet"),
        ],
        outputs=[
            *_outputs("run-id", "model-uri", "rmse", "mae", "r2"),
            _artifact_out("holdout", f"{OUT}/holdout.parquet"),
            _artifact_out("plot", f"{OUT}/fit.png"),
        ],
        env=_tracking_env(),
        resources=_LARGE,
        deadline_seconds=1800,
    )
    register = _step(
        settings,
        "register",
        [
            "--model-uri",
            _arg("model-uri"),
            "--run-id",
            _arg("run-id"),
            "--model-name",
            _arg("model-name"),
            "--data-hash",
            _arg("data-hash"),
            "--data-source",
            _arg("source"),
            "--code-version",
            settings.code_version,
            "--workflow-name",
            "{{workflow.name}}",
            "--workflow-uid",
            "{{workflow.uid}}",
        ],
        inputs=_inputs(
            "model-uri", "run-id", "model-name", "data-hash", "source", "mlflow-tracking-uri"
        ),
        outputs=_outputs("version"),
        env=_tracking_env(),
        network=True,
    )
    promote = _step(
        settings,
        "promote",
        [
            "--version",
            _arg("version"),
            "--holdout",
            f"{IN}/holdout.parquet",
            "--model-name",
            _arg("model-name"),
            "--tolerance",
            _arg("gate-tolerance"),
        ],
        inputs=[
            *_inputs("version", "model-name", "gate-tolerance", "mlflow-tracking-uri"),
            Artifact(name="holdout", path=f"{IN}/holdout.parquet"),
        ],
        outputs=_outputs("promoted", "reason", "new-rmse", "champion-rmse", "champion-version"),
        env=_tracking_env(),
        network=True,
    )
    deploy = _step(
        settings,
        "deploy",
        [
            "--target",
            _arg("deploy-target"),
            "--version",
            _arg("version"),
            "--model-name",
            _arg("model-name"),
            "--run-id",
            _arg("run-id"),
            "--workflow-uid",
            "{{workflow.uid}}",
            "--deployment",
            _arg("serving-deployment"),
        ],
        inputs=_inputs(
            "deploy-target",
            "version",
            "model-name",
            "run-id",
            "serving-deployment",
            "mlflow-tracking-uri",
        ),
        outputs=_outputs("served-version", "changed"),
        env=[*_tracking_env(), FieldEnv(name="POD_NAMESPACE", field_path="metadata.namespace")],
        deadline_seconds=900,
        network=True,
    )
    return {t.name: t for t in (fetch, validate, train, register, promote, deploy)}


def _labels(settings: PipelineSettings) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": TEMPLATE_NAME,
        "app.kubernetes.io/part-of": "dewpoint-pipeline",
        "app.kubernetes.io/managed-by": "hera",
        # Which code rendered (and so which step CLI) this resource: compare with the image tag.
        "app.kubernetes.io/version": settings.code_version,
    }


def _wf(name: str) -> str:
    return "{{workflow.parameters." + name + "}}"


def _task_out(task: str, name: str) -> str:
    return "{{tasks." + task + ".outputs.parameters." + name + "}}"


def _task_artifact(task: str, name: str) -> str:
    return "{{tasks." + task + ".outputs.artifacts." + name + "}}"


def build_workflow_template(settings: PipelineSettings) -> WorkflowTemplate:
    """The `dewpoint-pipeline` WorkflowTemplate: fetch -> validate -> train -> register -> promote
    -> deploy (deploy only when promote says `promoted == true`).

    Concurrency: a workflow-level mutex. promote moves the `champion` alias and deploy serves it,
    so both must sit in one critical section; a lock on deploy alone would let run A promote v5,
    run B promote v6, then A deploy v5 over B's champion. Runs are weekly, so queueing a whole
    run behind another costs nothing worth the extra nesting a promote+deploy sub-DAG would need.
    """
    params = workflow_parameters(settings)
    with WorkflowTemplate(
        name=TEMPLATE_NAME,
        namespace=settings.namespace,
        labels=_labels(settings),
        entrypoint=ENTRYPOINT,
        service_account_name=settings.service_account,
        security_context=_pod_security(),
        arguments=[
            Parameter(name=p.name, value=p.default, description=p.description, enum=list(p.enum))
            if p.enum
            else Parameter(name=p.name, value=p.default, description=p.description)
            for p in params
        ],
        synchronization=m.Synchronization(mutexes=[m.Mutex(name=MUTEX_NAME)]),
        active_deadline_seconds=4 * 3600,
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        ttl_strategy=m.TTLStrategy(
            seconds_after_success=7 * 24 * 3600, seconds_after_failure=14 * 24 * 3600
        ),
        workflow_metadata=m.WorkflowMetadata(labels=_labels(settings)),
        artifact_repository_ref=m.ArtifactRepositoryRef(
            config_map=ARTIFACT_REPOSITORY_CONFIGMAP, key="default"
        ),
    ) as template:
        stages = _templates(settings)
        with DAG(name=ENTRYPOINT):
            fetch = Task(
                name="fetch",
                template=stages["fetch"],
                arguments={
                    n: _wf(n)
                    for n in (
                        "source",
                        "years",
                        "stations",
                        "gsod-base-url",
                        "table-uri",
                        "column-map",
                        "synthetic-rows",
                    )
                },
            )
            validate = Task(
                name="validate",
                template=stages["validate"],
                arguments=[
                    Parameter(name="rain-only", value=_wf("rain-only")),
                    Artifact(name="dataset", from_=_task_artifact("fetch", "dataset")),
                ],
            )
            train = Task(
                name="train",
                template=stages["train"],
                arguments=[
                    Parameter(name="model-type", value=_wf("model-type")),
                    Parameter(name="data-hash", value=_task_out("fetch", "data-hash")),
                    Parameter(name="source", value=_wf("source")),
                    Parameter(name="mlflow-tracking-uri", value=_wf("mlflow-tracking-uri")),
                    Artifact(name="validated", from_=_task_artifact("validate", "validated")),
                ],
            )
            register = Task(
                name="register",
                template=stages["register"],
                arguments={
                    "model-uri": _task_out("train", "model-uri"),
                    "run-id": _task_out("train", "run-id"),
                    "model-name": _wf("model-name"),
                    "data-hash": _task_out("fetch", "data-hash"),
                    "source": _wf("source"),
                    "mlflow-tracking-uri": _wf("mlflow-tracking-uri"),
                },
            )
            promote = Task(
                name="promote",
                template=stages["promote"],
                arguments=[
                    Parameter(name="version", value=_task_out("register", "version")),
                    Parameter(name="model-name", value=_wf("model-name")),
                    Parameter(name="gate-tolerance", value=_wf("gate-tolerance")),
                    Parameter(name="mlflow-tracking-uri", value=_wf("mlflow-tracking-uri")),
                    Artifact(name="holdout", from_=_task_artifact("train", "holdout")),
                ],
            )
            deploy = Task(
                name="deploy",
                template=stages["deploy"],
                when=_task_out("promote", "promoted") + " == true",
                arguments={
                    "deploy-target": _wf("deploy-target"),
                    "version": _task_out("register", "version"),
                    "model-name": _wf("model-name"),
                    "run-id": _task_out("train", "run-id"),
                    "serving-deployment": _wf("serving-deployment"),
                    "mlflow-tracking-uri": _wf("mlflow-tracking-uri"),
                },
            )
            # fetch's data-hash and train's run-id reach later tasks through the chain below.
            fetch >> validate >> train >> register >> promote >> deploy
    return template


def build_cron_workflow(settings: PipelineSettings) -> CronWorkflow:
    """The `dewpoint-pipeline-weekly` CronWorkflow that runs the WorkflowTemplate on a schedule.

    `concurrencyPolicy: Forbid` skips a tick while the last run is still going. The stop strategy
    (Argo >= 3.6) stops scheduling once `settings.stop_after_failures` child workflows have failed;
    the counter lives in the CronWorkflow's status, so after fixing the cause re-create it (or
    `argo cron resume`) to start again. `suspend` pauses it without deleting anything.
    """
    return CronWorkflow(
        name=CRON_NAME,
        namespace=settings.namespace,
        labels=_labels(settings),
        schedules=[settings.schedule],
        timezone=settings.timezone,
        concurrency_policy="Forbid",
        starting_deadline_seconds=3600,
        successful_jobs_history_limit=3,
        failed_jobs_history_limit=3,
        cron_suspend=settings.suspend,
        stop_strategy=m.StopStrategy(
            expression=f"cronworkflow.failed >= {settings.stop_after_failures}"
        ),
        # Runs get their labels from the template's workflowMetadata; nothing to repeat here.
        workflow_template_ref=m.WorkflowTemplateRef(name=TEMPLATE_NAME),
    )


def build_run_workflow(
    settings: PipelineSettings, parameters: Mapping[str, str] | None = None
) -> Workflow:
    """A one-off Workflow from the template (`submit.py --run-now`), with parameter overrides.

    Raises:
        ValueError: a parameter name the template does not define.
    """
    parameters = dict(parameters or {})
    known = {p.name for p in workflow_parameters(settings)}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(
            f"unknown workflow parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return Workflow(
        generate_name=f"{TEMPLATE_NAME}-",
        namespace=settings.namespace,
        labels=_labels(settings),
        workflow_template_ref=m.WorkflowTemplateRef(name=TEMPLATE_NAME),
        arguments=[Parameter(name=k, value=v) for k, v in sorted(parameters.items())] or None,
    )


def render(settings: PipelineSettings) -> dict[str, dict]:
    """The plain dicts of both resources, keyed `workflow-template` and `cron-workflow`.

    The local runner executes `render(...)["workflow-template"]`; submit sends the same dicts.
    """
    return {
        "workflow-template": build_workflow_template(settings).to_dict(),
        "cron-workflow": build_cron_workflow(settings).to_dict(),
    }
