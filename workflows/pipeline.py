"""Hera builders for the pipeline's Argo resources: one `build_*` per resource, plus `render`.

Every task runs `python -m steps <stage> ...` in the step image; its template is made from the
stage's declaration (steps/stages.py) by `stage_template`, and its task by `stage_task`, so a flag,
an output or an artifact is said once. All I/O lives under `/work` so the root filesystem can be
read-only and the local runner can remap one directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

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
    S3Artifact,
    SecretEnv,
    SecretVolume,
    Task,
    Workflow,
    WorkflowTemplate,
)
from hera.workflows import models as m

from steps.cli import EXIT_TRANSIENT
from steps.contract import Stage, WorkflowParameter
from steps.revision import TAG_GIT_DIRTY
from steps.stages import (
    ALIAS_ROUNDS,
    CHAMPION,
    CHECK_PARAMETERS,
    DEPLOY,
    FETCH,
    NO_CHAMPION,
    PROMOTE,
    REGISTER,
    TRACKING_URI,
    TRAIN,
    VALIDATE,
    WORKFLOW_PARAMETERS,
)
from steps.year_items import BY_YEAR_SOURCES, resolve_years
from workflows.argo_rules import Backoff, check_parameter_names, global_output_order
from workflows.settings import PipelineSettings

TEMPLATE_NAME = "dewpoint-pipeline"
CRON_NAME = "dewpoint-pipeline-weekly"
ENTRYPOINT = "pipeline"
# The release lock: one mutex per registered model (Argo scopes mutexes to the workflow's
# namespace). Argo substitutes workflow parameters into the workflow spec, `synchronization`
# included, before it takes the workflow-level lock: Argo v4.1.2 workflow/controller/operator.go,
# `setExecWorkflow` -> `substituteGlobalVariables` (the spec without its templates, through
# `template.Replace`), which runs before `syncManager.TryAcquire` on `execWf.Spec.Synchronization`.
# A mutex name may hold `/`: a lock key is split as `namespace/Mutex/name` with SplitN(..., 3)
# (workflow/sync/lock_name.go, `DecodeLockName`).
# Argo keys the lock with the name's text as substituted, white space included: a run's
# `-p model-name` with white space around it is refused before it is sent or run
# (workflows.argo_rules.given_value_problem), as every step refuses it (steps.contract
# parse_as_given), or `foo ` and `foo` would be one model under two locks.
MUTEX_NAME = "dewpoint-pipeline-release-{{workflow.parameters.model-name}}"
ARTIFACT_REPOSITORY_CONFIGMAP = "artifact-repositories"
GOOGLE_CREDENTIALS_SECRET = "google-credentials"
# The pipeline's MLflow user (basic auth), created by kind/up.sh; read-only users get other ones.
MLFLOW_CREDENTIALS_SECRET = "mlflow-pipeline"
GOOGLE_CREDENTIALS_DIR = "/var/run/secrets/google"
CONTAINER_USER = 10001
STEP_LABEL = "dewpoint-pipeline/step"
GIT_COMMIT_LABEL = "dewpoint-pipeline/git-commit"
GIT_DIRTY_LABEL = "dewpoint-pipeline/git-dirty"

# Task outputs exported as the workflow's own outputs (Argo's `globalName`), per stage: each run's
# `status.outputs.parameters` then holds its MLflow run, model version and gate decision, and the
# Argo UI links (`argo_ui_links`) open them. Argo appends them in the order the tasks finish.
GLOBAL_OUTPUTS: dict[str, dict[str, str]] = {
    "train": {"run-id": "mlflow-run-id"},
    "register": {"model-name": "registered-model", "version": "model-version"},
    "promote": {"promoted": "gate-promoted", "reason": "gate-reason"},
    "deploy": {"served-version": "served-version"},
}

# The per-year datasets live in the artifact repository as key-only artifacts (the repository's
# bucket and credentials, from `artifactRepositoryRef`; Argo v4.1.2 docs/key-only-artifacts.md)
# under DATA_PREFIX/<data-key>/: fetched/<part>.parquet, validated/<part>.parquet and
# reports/<part>.json. A key names a run's data settings and code version (check-parameters'
# `data-key`, steps/year_items.py), not the run, so a memoized year's objects are the ones a
# later run reads. train loads `validated/` as a prefix: Argo's S3 driver downloads every object
# under a key that is a directory (workflow/artifacts/s3/s3.go, loadS3Artifact), and train reads
# only this run's years (`--parts`).
DATA_PREFIX = "dewpoint-pipeline/data"
# Memoization of past years (Argo v4.1.2 docs/memoization.md): the outputs of fetch and validate
# per year are kept in these ConfigMaps (the controller creates them, labelled
# `workflows.argoproj.io/configmap-type: Cache`); a completed year's key repeats from run to run
# (fetch: one entry per year and data key, overwritten when it expires: configmap_cache.go
# `save`; validate: one per year, data key and data fetched, so only a past year whose data
# changed adds one, the old one left unused until the ConfigMap is deleted). The
# current year runs through FETCH_CURRENT and VALIDATE_CURRENT, the same steps without
# `memoize`: a key per run would add an entry every run, and `maxAge` only ignores old entries,
# never deletes them (workflow/controller/cache/cache.go GetOutputsWithMaxAge; deletion is the
# cache GC, off unless CACHE_GC_PERIOD is set: workflow/controller/controller.go, cache_gc.go,
# all at v4.1.2). MEMO_MAX_AGE: a cached year older than 30 days is fetched again, so NOAA's late
# corrections of a past year arrive within a month.
# To invalidate: `kubectl -n <namespace> delete configmap dewpoint-pipeline-fetch-cache
# dewpoint-pipeline-validate-cache` (docs/memoization.md: entries are plain ConfigMap data).
FETCH_CACHE = "dewpoint-pipeline-fetch-cache"
VALIDATE_CACHE = "dewpoint-pipeline-validate-cache"
MEMO_MAX_AGE = "720h"
FETCH_CURRENT = "fetch-current"
VALIDATE_CURRENT = "validate-current"
# validate's memoization key holds the year's `memo` and fetch's output of this name.
DATA_HASH = "data-hash"
# One year: fetch, then validate, as one dag template per kind of year, called once per loop
# item. A year's fetch and validate must be in one DAG for validate's arguments (its memoization
# key) to name that year's fetch outputs; loop items of two separate tasks cannot name each
# other's.
PAST_YEAR = "past-year"
CURRENT_YEAR = "current-year"
# How many per-year pods run at once (the entrypoint DAG's `parallelism`). Argo cannot read it
# from a workflow parameter: the field is an int64 (argoproj/argo-workflows#1780, open; #13368
# would allow it), so it is a render setting (PipelineSettings.fan_out_parallelism).

WORK = "/work"
IN = f"{WORK}/in"
OUT = f"{WORK}/out"
OUTPUTS_DIR = f"{WORK}/outputs"


def workflow_parameters(settings: PipelineSettings) -> list[WorkflowParameter]:
    """The workflow parameters: those the stage flags name (steps/stages.py), with their enums;
    `mlflow-tracking-uri` defaults to `settings.mlflow_tracking_uri`. `-p name=value` overrides
    them per run."""
    defaults = {"mlflow-tracking-uri": settings.mlflow_tracking_uri}
    return [replace(p, default=defaults.get(p.name, p.default)) for p in WORKFLOW_PARAMETERS]


# Requests sized from the prototype's runs; limits leave room for pandas/sklearn peaks.
_SMALL = Resources(cpu_request="100m", cpu_limit="1", memory_request="256Mi", memory_limit="1Gi")
_LARGE = Resources(cpu_request="500m", cpu_limit="2", memory_request="512Mi", memory_limit="2Gi")
# The parameter check imports no pandas, pyarrow or MLflow (steps/stages.py): about 30 MB.
_TINY = Resources(cpu_request="50m", cpu_limit="500m", memory_request="64Mi", memory_limit="256Mi")


RETRY_LIMIT = 3
BACKOFF_SECONDS = 30
BACKOFF_FACTOR = 2
# Per attempt, on top of its activeDeadlineSeconds: scheduling, image start and the executor's
# init/wait containers, which the pod deadline does not count.
POD_START_SLACK_SECONDS = 60


def retry_budget_seconds(deadline_seconds: int, limit: int = RETRY_LIMIT) -> int:
    """Seconds a retried step may take in all: every attempt its whole deadline, every backoff.

    Argo measures `backoff.maxDuration` from the first attempt's start and cuts each retry's pod
    deadline to that mark (workflow/controller/operator.go, processNodeRetries, at v4.1.2), so a
    smaller budget would leave a late failure unretried and a retry with less than its deadline.
    The waits are 30, 60, 120 s: duration * factor^(retry - 1).
    """
    backoff = Backoff(BACKOFF_SECONDS, BACKOFF_FACTOR)
    waits = int(sum(backoff.wait_seconds(retry) for retry in range(1, limit + 1)))
    return (limit + 1) * (deadline_seconds + POD_START_SLACK_SECONDS) + waits


# The stages that run once per year (loop items) under the entrypoint DAG's parallelism.
PER_YEAR_STAGES = (FETCH.name, VALIDATE.name)


def run_deadline_seconds(
    stages: Mapping[str, Container], per_year: Sequence[str], items: int, parallelism: int
) -> int:
    """A run's `activeDeadlineSeconds`: long enough for every stage's whole retry budget.

    The stages run one after another, except the `per_year` ones, which run once per loop item,
    one after another within the item's DAG node, with at most `parallelism` items at a time (the
    entrypoint DAG's `parallelism`). Up to `parallelism` items they all run at once, so each
    counts once; beyond that the bound is a greedy scheduler's (Graham 1966): all their work
    spread over the slots, plus one item's chain.
    """
    chain = sum(_worst_case_seconds(stages[name]) for name in per_year)
    rest = sum(_worst_case_seconds(s) for name, s in stages.items() if name not in per_year)
    if items <= parallelism:
        return rest + chain
    return rest + -(-items * chain // parallelism) + chain


def _worst_case_seconds(stage: Container) -> int:
    """How long one stage may take: its retry budget, or one attempt when it is not retried."""
    deadline = int(stage.active_deadline_seconds)
    if stage.retry_strategy is None:
        return deadline + POD_START_SLACK_SECONDS
    return retry_budget_seconds(deadline, int(stage.retry_strategy.limit))


# Retry only what may pass on a second try: a step's exit code 75 (steps/cli.py EXIT_TRANSIENT:
# MLflow, GSOD or the Kubernetes API unreachable, slow or answering 5xx), or a pod Argo reports as
# `Error` (deleted, evicted, node lost). Bad input (2) and other failures (1) are not retried.
# Argo v4.1.2 evaluates it (expr-lang) after each failed attempt, and with retryPolicy it must both
# allow the retry; `lastRetry.exitCode` is a string ("-1" when there is none), `asInt` converts it.
# Sources (tag v4.1.2): docs/retries.md "Conditional retries"; workflow/controller/operator.go,
# `buildRetryStrategyLocalScope` and `processNodeRetries`; util/expr/env/env.go, `GetFuncMap`.
RETRY_EXPRESSION = f'asInt(lastRetry.exitCode) == {EXIT_TRANSIENT} || lastRetry.status == "Error"'


def _network_retry(deadline_seconds: int) -> RetryStrategy:
    """Retries for steps that talk to the network (NOAA, MLflow, the Kubernetes API)."""
    return RetryStrategy(
        limit=RETRY_LIMIT,  # an int: Argo accepts IntOrString (its JSON schema says string only)
        retry_policy="Always",
        backoff=m.Backoff(
            duration=f"{BACKOFF_SECONDS}s",
            factor=m.IntOrString(BACKOFF_FACTOR),
            max_duration=f"{retry_budget_seconds(deadline_seconds)}s",
        ),
        expression=RETRY_EXPRESSION,
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


def _input(name: str) -> str:
    return "{{inputs.parameters." + name + "}}"


def _flag_arg(option: str, value: str) -> str:
    """`--option=value` as one argument: argparse splits it at the first `=` and takes the rest
    as the value whatever it holds (a leading `-`, more `=`, nothing at all), where `--option`
    `value` as two would read a value like `-x` or `--foo` as an option of its own."""
    return f"{option}={value}"


def _mlflow_credentials_env() -> list[SecretEnv]:
    """The pipeline user's MLflow credentials, from the Secret kind/up.sh makes.

    They come from the environment MLflow's client reads (never a parameter or the URI, which
    Argo shows). `optional`: against an MLflow without authentication there is no Secret and the
    variables stay unset; the local runner takes them from its own environment.
    """
    return [
        SecretEnv(
            name=f"MLFLOW_TRACKING_{key.upper()}",
            secret_name=MLFLOW_CREDENTIALS_SECRET,
            secret_key=key,
            optional=True,
        )
        for key in ("username", "password")
    ]


def stage_template(
    settings: PipelineSettings,
    stage: Stage,
    *,
    name: str | None = None,
    inputs: Sequence[str] = (),
    values: Mapping[str, str] | None = None,
    env: Sequence[Env | FieldEnv | SecretEnv] = (),
    resources: Resources = _SMALL,
    deadline_seconds: int = 600,
    network: bool = False,
    extra_volumes: Sequence[SecretVolume] = (),
) -> Container:
    """A Container template running `python -m steps <stage>`, made from the stage's declaration.

    Which flags it passes, and from where:
    - a flag that takes a workflow parameter (`Flag.parameter`): a template input of that name,
      on the command line, or in its environment variable if the flag is `by_env`;
    - a flag named in `inputs`: a template input of the flag's name (the task supplies it, e.g.
      from another task's output);
    - a flag naming an artifact: `/work/in/<file>` or `/work/out/<file>`, with the artifact;
    - a flag in `values`: that literal (or `{{workflow.*}}`) value; it wins over the above;
    - every other flag: not passed, so the step's default applies.
    Every declared output parameter is read from `/work/outputs/<name>`. A stage that talks to
    MLflow (it declares `TRACKING_URI`) also gets the pipeline user's credentials.

    Raises:
        KeyError: `inputs` or `values` name a flag the stage does not declare.
    """
    values = dict(values or {})
    for flag_name in [*inputs, *values]:
        stage.flag(flag_name)  # a misspelt flag fails here, at render
    artifacts = {a.flag: a for a in stage.artifacts}
    args: list[str] = []
    env_vars: list[Env | FieldEnv] = [Env(name="HOME", value="/tmp")]
    by_env: list[Env] = []
    argv_inputs, env_inputs = [], []
    template_artifacts_in: list[Artifact] = []
    template_artifacts_out: list[Artifact] = []
    for flag in stage.flags:
        if flag.name in values:
            value = values[flag.name]
        elif flag.name in artifacts:
            artifact = artifacts[flag.name]
            path = f"{OUT if artifact.output else IN}/{artifact.file}"
            if artifact.output:
                # Parquet, PNG and JSON gain nothing from tar+gzip and stay readable in the store.
                template_artifacts_out.append(
                    Artifact(name=artifact.name, path=path, archive=NoneArchiveStrategy())
                )
            else:
                template_artifacts_in.append(Artifact(name=artifact.name, path=path))
            value = path
        elif flag.parameter or flag.name in inputs:
            input_name = flag.parameter or flag.name
            if flag.by_env:
                env_inputs.append(input_name)
                by_env.append(Env(name=flag.env, value=_input(input_name)))
                continue
            argv_inputs.append(input_name)
            value = _input(input_name)
        else:
            continue
        # One argument, `--flag=value`: a value starting with `-` (`-p model-name=-x`) is then
        # never read by argparse as a flag of its own, and an empty one is still a value.
        args.append(_flag_arg(flag.option, value))
    credentials = _mlflow_credentials_env() if TRACKING_URI in stage.flags else []
    exported = GLOBAL_OUTPUTS.get(stage.name, {})
    outputs: list[Parameter | Artifact] = [
        Parameter(
            name=o.name,
            value_from=m.ValueFrom(path=f"{OUTPUTS_DIR}/{o.name}"),
            global_name=exported.get(o.name),
        )
        for o in stage.outputs
    ]
    volumes = [
        EmptyDirVolume(name="work", mount_path=WORK),
        # emptyDir /tmp: matplotlib, MLflow and pip-less Python all want a writable temp dir.
        EmptyDirVolume(name="tmp", mount_path="/tmp"),
        *extra_volumes,
    ]
    template_inputs = [
        *(Parameter(name=n) for n in dict.fromkeys([*argv_inputs, *env_inputs])),
        *template_artifacts_in,
    ]
    return Container(
        name=name or stage.name,
        image=settings.image,
        image_pull_policy=settings.image_pull_policy,
        command=["python", "-m", "steps", stage.name],
        args=[*args, _flag_arg("--outputs-dir", OUTPUTS_DIR)],
        inputs=template_inputs or None,
        outputs=[*outputs, *template_artifacts_out] or None,
        env=[*env_vars, *by_env, *credentials, *env],
        resources=resources,
        security_context=_container_security(),
        volumes=volumes,
        active_deadline_seconds=deadline_seconds,
        retry_strategy=_network_retry(deadline_seconds) if network else None,
        # The pod's step, for NetworkPolicies: only fetch and deploy get egress beyond the
        # platform (kind/base/network-policies).
        labels={STEP_LABEL: stage.name},
    )


def per_year(
    template: Container,
    keys: Mapping[str, str],
    cache: str | None = None,
    keyed_by: Sequence[str] = (),
) -> Container:
    """`template` (changed in place) as one year's step: artifacts named in `keys` become
    key-only under `DATA_PREFIX/<data-key>/` (`<key>` may name other inputs) and it takes the
    inputs `part` and `data-key`; with `cache`, also `memo` and the inputs `keyed_by`, by which
    (joined by `-`) it is memoized in ConfigMap `cache` for MEMO_MAX_AGE.

    Raises:
        KeyError: `keys` names an artifact the template does not have.
    """
    prefix = f"{DATA_PREFIX}/{_input('data-key')}"
    found = set()

    def keyed(artifact: Artifact | Parameter) -> Artifact | Parameter:
        if not isinstance(artifact, Artifact) or artifact.name not in keys:
            return artifact
        found.add(artifact.name)
        return S3Artifact(
            name=artifact.name,
            path=artifact.path,
            key=f"{prefix}/{keys[artifact.name]}",
            archive=artifact.archive,
        )

    inputs = [keyed(i) for i in template.inputs or []]
    extra_inputs = ("part", "memo", *keyed_by, "data-key") if cache else ("part", "data-key")
    inputs += [Parameter(name=n) for n in extra_inputs if n not in {i.name for i in inputs}]
    outputs = [keyed(o) for o in template.outputs or []]
    missing = set(keys) - found
    if missing:
        raise KeyError(f"template {template.name} has no artifact {sorted(missing)}")
    if cache:
        template.memoize = m.Memoize(
            key="-".join(_input(name) for name in ("memo", *keyed_by)),
            max_age=MEMO_MAX_AGE,
            cache=m.Cache(config_map=m.LocalObjectReference(name=cache)),
        )
    template.inputs, template.outputs = inputs, outputs
    return template


def stage_task(
    template: Container,
    *,
    name: str | None = None,
    upstream: Sequence[Task] = (),
    arguments: Mapping[str, Parameter | Artifact | str] | None = None,
    **task_options: object,
) -> Task:
    """A DAG task calling `template` (made by `stage_template`); call inside `with DAG(...)`.

    Each input takes, first found: its entry in `arguments` (a getter of another task, e.g.
    `fetch.get_parameter("data-hash")`, or a literal); for a parameter named after a workflow
    parameter, `{{workflow.parameters.<name>}}`; else the output of the same name (parameter or
    artifact) of the last task in `upstream` whose template declares one, through Hera's checked
    getters. Inputs and outputs share their names in the stage declarations (steps/stages.py), so
    the wiring is said there once. `task_options` go to Hera's Task (`when`, ...).

    Raises:
        ValueError: an input without a value, or an argument the template does not take.
    """
    given = dict(arguments or {})
    parameters = {p.name for p in WORKFLOW_PARAMETERS}
    inputs = template.inputs or []
    declared = {i.name for i in inputs}
    unknown = sorted(set(given) - declared)
    if unknown:
        raise ValueError(f"task {name or template.name}: {template.name} takes no {unknown}")
    built: list[Parameter | Artifact] = []
    for item in inputs:
        source = given.get(item.name)
        if isinstance(item, S3Artifact):
            continue  # key-only: the template names its object itself
        if source is None and (isinstance(item, Artifact) or item.name not in parameters):
            source = _upstream_output(item, upstream)
        if isinstance(item, Artifact):
            if not isinstance(source, Artifact):
                raise ValueError(
                    f"task {name or template.name}: artifact {item.name} has no source"
                )
            built.append(Artifact(name=item.name, from_=source.from_))
        elif isinstance(source, Parameter):
            built.append(Parameter(name=item.name, value=source.value))
        elif isinstance(source, str):
            built.append(Parameter(name=item.name, value=source))
        elif item.name in parameters:
            built.append(Parameter(name=item.name, value=_wf(item.name)))
        else:
            raise ValueError(f"task {name or template.name}: input {item.name} has no value")
    return Task(name=name or template.name, template=template, arguments=built, **task_options)


def _upstream_output(
    item: Parameter | Artifact, upstream: Sequence[Task]
) -> Parameter | Artifact | None:
    """The output named like input `item` (parameter or artifact alike) of the last task in
    `upstream` whose template declares one, as Hera's getter gives it; None if none does."""
    for task in reversed(upstream):
        outputs = (task.template.outputs or []) if isinstance(task.template, Container) else []
        for output in outputs:
            if output.name == item.name and isinstance(output, Artifact) == isinstance(
                item, Artifact
            ):
                getter = task.get_artifact if isinstance(item, Artifact) else task.get_parameter
                return getter(item.name)
    return None


def _templates(settings: PipelineSettings) -> dict[str, Container]:
    """The stage templates, keyed by name: the parameter check, then the six stages."""
    check = stage_template(settings, CHECK_PARAMETERS, resources=_TINY, deadline_seconds=300)

    def fetch_template(name: str) -> Container:
        return stage_template(
            settings,
            FETCH,
            name=name,
            # Only the bigquery source reads the key; the Secret volume is `optional`, so pods of
            # the other sources start without it (create Secret `google-credentials`, key
            # `key.json`).
            env=[
                Env(
                    name="GOOGLE_APPLICATION_CREDENTIALS",
                    value=f"{GOOGLE_CREDENTIALS_DIR}/key.json",
                )
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

    fetched = {"dataset": "fetched/{{inputs.parameters.part}}.parquet"}
    validated_keys = {
        **fetched,
        "validated": "validated/{{inputs.parameters.part}}.parquet",
        "validation-report": "reports/{{inputs.parameters.part}}.json",
    }
    # Past years: memoized; validate by the year and the hash of the data fetch gave it, so data
    # fetched anew is validated anew, never taken from the entry of the data fetched before.
    # The current year (and a source not split by year): the same step with the same keys but
    # no `memoize`, so it runs every time and adds no cache entry.
    fetch = per_year(fetch_template(FETCH.name), fetched, FETCH_CACHE)
    validate = per_year(
        stage_template(settings, VALIDATE), validated_keys, VALIDATE_CACHE, keyed_by=[DATA_HASH]
    )
    fetch_current = per_year(fetch_template(FETCH_CURRENT), fetched)
    validate_current = per_year(
        stage_template(settings, VALIDATE, name=VALIDATE_CURRENT), validated_keys
    )
    train = stage_template(
        settings, TRAIN, inputs=["parts"], resources=_LARGE, deadline_seconds=1800
    )
    # Every validated year under the run's data key (a prefix: a directory in the pod).
    validated = f"{DATA_PREFIX}/{_input('data-key')}/validated"
    train.inputs = [
        S3Artifact(name=i.name, path=i.path, key=validated) if isinstance(i, Artifact) else i
        for i in train.inputs or []
    ] + [Parameter(name="data-key")]
    register = stage_template(
        settings,
        REGISTER,
        inputs=["model-uri", "run-id"],
        values={
            "code-version": settings.code_version,
            "workflow-name": "{{workflow.name}}",
            "workflow-uid": "{{workflow.uid}}",
        },
        network=True,
    )
    promote = stage_template(settings, PROMOTE, inputs=["version"], network=True)
    # Deploy serves what the champion alias names when it serves, which a promote from another
    # door may have moved since this run's promote (steps/deploy.py); it reads that version's run
    # id (its provenance) from the registry itself, since it is not this run's when the gate
    # refused.
    deploy = stage_template(
        settings,
        DEPLOY,
        values={"alias": CHAMPION, "workflow-uid": "{{workflow.uid}}"},
        env=[FieldEnv(name="POD_NAMESPACE", field_path="metadata.namespace")],
        # Up to ALIAS_ROUNDS serves, each waiting up to --timeout for its rollout, and 5 minutes
        # for the rest (the smoke tests, MLflow): Argo must not kill a deploy that would end.
        deadline_seconds=int(ALIAS_ROUNDS * DEPLOY.flag("timeout").default) + 300,
        network=True,
    )
    return {
        t.name: t
        for t in (check, fetch, validate, fetch_current, validate_current, train, register,
                  promote, deploy)
    }  # fmt: skip


def _year_dag(fetch: Container, validate: Container, name: str, memoized: bool) -> DAG:
    """The dag template `name` of one year, called once per loop item (inputs `year`, `part`,
    with `memoized` also `memo`, and `data-key`): task `fetch` calling template `fetch`, then
    task `validate` calling `validate`, which takes fetch's outputs of the names it has as inputs
    (the memoized one: its key's `data-hash`). Call inside the WorkflowTemplate's context."""
    item = ["part", "memo"] if memoized else ["part"]
    with DAG(
        name=name,
        inputs=[Parameter(name=n) for n in ("year", *item, "data-key")],
    ) as year_dag:
        passed = {n: _input(n) for n in (*item, "data-key")}
        fetched = stage_task(fetch, name=FETCH.name, arguments={"years": _input("year"), **passed})
        validated = stage_task(validate, name=VALIDATE.name, upstream=(fetched,), arguments=passed)
        fetched >> validated
    return year_dag


def _labels(settings: PipelineSettings) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": TEMPLATE_NAME,
        "app.kubernetes.io/part-of": "dewpoint-pipeline",
        "app.kubernetes.io/managed-by": "hera",
        # Which code rendered (and so which step CLI) this resource: compare with the image tag.
        "app.kubernetes.io/version": settings.code_version,
        # ...and from which commit; the step image and each model version record their own.
        GIT_COMMIT_LABEL: settings.revision.commit,
        GIT_DIRTY_LABEL: settings.revision.tags()[TAG_GIT_DIRTY],
    }


def _wf(name: str) -> str:
    return "{{workflow.parameters." + name + "}}"


def build_workflow_template(settings: PipelineSettings) -> WorkflowTemplate:
    """The `dewpoint-pipeline` WorkflowTemplate: fetch -> validate -> train -> register -> promote
    -> deploy of the champion after the gate, promoted or not, so every run ends with the champion
    served (a no-op when it already is); skipped only when there is no champion at all.

    Concurrency: a workflow-level mutex per model name (MUTEX_NAME). promote moves the `champion`
    alias and deploy serves it, so both must sit in one critical section; a lock on deploy alone
    would let run A promote v5, run B promote v6, then A deploy v5 over B's champion. Runs in
    other namespaces or clusters are not held by it: promote's claim (steps/promote.py) is. Runs
    are weekly, so queueing a whole run behind another costs nothing worth the extra nesting a
    promote+deploy sub-DAG would need.
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
            Parameter(
                name=p.name,
                value=p.default,
                description=p.help,
                enum=list(p.choices) if p.choices else None,
            )
            for p in params
        ],
        synchronization=m.Synchronization(mutexes=[m.Mutex(name=MUTEX_NAME)]),
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
        # The run's deadline never cuts a step short of a retry its own budget allows: here for
        # the default years (resolve_years: two, within the fan-out); a run over more years
        # gets its own (build_run_workflow). The current year's fetch-current and
        # validate-current count among the serial stages: under `parallelism` they may wait.
        template.active_deadline_seconds = run_deadline_seconds(
            stages, PER_YEAR_STAGES, len(resolve_years("")), settings.fan_out_parallelism
        )
        # One year: fetch, then validate (steps/year_items.py). Past years through the memoized
        # templates, the current year through the others. validate's arguments, its memoization
        # key included, name this year's fetch outputs; Argo substitutes the dag's inputs into
        # its tasks before it runs it (v4.1.2 workflow/controller/operator.go executeTemplate ->
        # common.ProcessArgs, then executeDAG; the key of each template it calls is substituted
        # from that template's own inputs the same way, before the cache is asked).
        year_dags = {
            items: _year_dag(stages[fetch_name], stages[validate_name], name, memoized)
            for items, name, fetch_name, validate_name, memoized in (
                ("past-years", PAST_YEAR, FETCH.name, VALIDATE.name, True),
                ("current-years", CURRENT_YEAR, FETCH_CURRENT, VALIDATE_CURRENT, False),
            )
        }
        # `parallelism` bounds the entrypoint DAG's active children: the years' dag nodes, each
        # running one pod at a time, and the pods of its own tasks (v4.1.2
        # workflow/controller/node_counters.go getActiveChildrenCounter; operator.go
        # checkParallelism), so at most that many per-year pods run at once.
        with DAG(name=ENTRYPOINT, parallelism=settings.fan_out_parallelism):
            # Every workflow parameter is checked before any stage writes state (docs/steps.md).
            # Each task's inputs come from the earlier tasks' outputs of the same names.
            check = stage_task(stages["check-parameters"])
            # One dag node per year, of the list check-parameters resolved. A list that is empty
            # (no past year asked for; no current year) skips its task, which `depends` counts
            # as done (argo-workflows v4.1.2 workflow/controller/dag.go, "Skipped, empty
            # params"; docs/enhanced-depends-logic.md).
            loops = []
            for items, year_dag in year_dags.items():
                names = [p.name for p in year_dag.inputs or [] if p.name != "data-key"]
                years = Task(
                    name=items,
                    template=year_dag,
                    arguments=[
                        *(Parameter(name=n, value="{{item." + n + "}}") for n in names),
                        Parameter(name="data-key", value=check.get_parameter("data-key").value),
                    ],
                    with_param=check.get_parameter(items),
                )
                check >> years
                loops.append(years)
            done: list[Task] = [check]
            for stage in ("train", "register", "promote"):
                done.append(stage_task(stages[stage], upstream=tuple(done)))
            _, train, register, promote = done
            # Argo compares a bare word as a string: `7 != none` is true, `none != none` false
            # (argo-workflows v4.1.2 workflow/controller/steps.go, shouldExecute).
            champion = promote.get_parameter("champion-version")
            deploy = stage_task(stages["deploy"], when=f"{champion.value} != {NO_CHAMPION}")
            # train's run-id and model-uri reach register through the chain below (register
            # copies every data tag from that run; train's data-hash output is for the UI).
            loops >> train >> register >> promote >> deploy
    return template


def build_cron_workflow(settings: PipelineSettings) -> CronWorkflow:
    """The `dewpoint-pipeline-weekly` CronWorkflow that runs the WorkflowTemplate on a schedule.

    `concurrencyPolicy: Forbid` skips a tick while the last run is still going. `suspend` pauses
    it without deleting anything (`argo cron suspend|resume`).

    No `stopStrategy`: its `cronworkflow.failed` counts failed runs over the cron's whole life,
    never consecutive ones, and once its expression holds the controller marks the cron Stopped
    (label `cronworkflows.argoproj.io/completed`) and ignores it for good; `argo cron
    resume` only unsuspends (workflow/cron/operator.go and controller.go at v4.1.2). A weekly job
    would die after N failures spread over years. A failed run changes nothing (the gate keeps
    the champion), so the cron keeps its schedule and each failure shows in the UI;
    `workflows/submit.py` re-creates a cron it finds Stopped.
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
        # Runs get their labels from the template's workflowMetadata; nothing to repeat here.
        workflow_template_ref=m.WorkflowTemplateRef(name=TEMPLATE_NAME),
    )


def build_run_workflow(
    settings: PipelineSettings, parameters: Mapping[str, str] | None = None
) -> Workflow:
    """A one-off Workflow from the template (`submit.py --run-now`), with parameter overrides.

    Raises:
        ArgoRuleError (a ValueError): a parameter name the template does not define.
    """
    parameters = dict(parameters or {})
    defaults = {p.name: p.default for p in workflow_parameters(settings)}
    check_parameter_names(list(defaults), parameters)
    return Workflow(
        generate_name=f"{TEMPLATE_NAME}-",
        namespace=settings.namespace,
        labels=_labels(settings),
        workflow_template_ref=m.WorkflowTemplateRef(name=TEMPLATE_NAME),
        arguments=[Parameter(name=k, value=v) for k, v in sorted(parameters.items())] or None,
        active_deadline_seconds=_run_deadline_override(settings, {**defaults, **parameters}),
    )


def _run_deadline_override(settings: PipelineSettings, values: Mapping[str, str]) -> int | None:
    """The `activeDeadlineSeconds` a run over more years than the fan-out needs, else None (the
    template's holds). A Workflow may set it under `templateReferencing: Strict` (v4.1.2
    workflow/util/merge.go, allowedUserOverrideFields). Years check-parameters would refuse
    leave the template's: that run stops at its first task."""
    source = values.get("source") or ""
    try:
        items = len(resolve_years(values.get("years") or "")) if source in BY_YEAR_SOURCES else 1
    except ValueError:
        return None
    if items <= settings.fan_out_parallelism:
        return None
    stages = _templates(settings)
    return run_deadline_seconds(stages, PER_YEAR_STAGES, items, settings.fan_out_parallelism)


def render(settings: PipelineSettings) -> dict[str, dict]:
    """The plain dicts of both resources, keyed `workflow-template` and `cron-workflow`.

    The local runner executes `render(...)["workflow-template"]`; submit sends the same dicts.
    """
    return {
        "workflow-template": build_workflow_template(settings).to_dict(),
        "cron-workflow": build_cron_workflow(settings).to_dict(),
    }


def argo_ui_links(settings: PipelineSettings, mlflow_ui_url: str) -> list[dict[str, str]]:
    """The Argo UI `links` (workflow-controller ConfigMap, key `links`) from a workflow to its
    MLflow training run and model version, for an MLflow UI served at `mlflow_ui_url`.

    Argo's UI replaces `${workflow.<path>}` by a plain lookup in the Workflow object, where a list
    index is a path segment (v4.1.2 ui/src/shared/components/links.tsx, processURL); the run id
    and version live in `status.outputs.parameters` at the positions `global_output_order` gives.
    MLflow's UI routes `#/runs/<run id>` and `#/models/<name>/versions/<version>` (3.17.2).
    Before train (or register) has finished, the link opens MLflow without an id.

    Returns:
        One dict per link: `name`, `scope` (`workflow`), `url`, `target` (a new tab).
    """
    order = global_output_order(render(settings)["workflow-template"]["spec"])

    def output(stage: str, name: str) -> str:
        index = order.index(GLOBAL_OUTPUTS[stage][name])
        return "${workflow.status.outputs.parameters." + str(index) + ".value}"

    base = mlflow_ui_url.rstrip("/") + "/#"
    return [
        {
            "name": "MLflow run",
            "scope": "workflow",
            "url": f"{base}/runs/{output('train', 'run-id')}",
            "target": "_blank",
        },
        {
            "name": "MLflow model version",
            "scope": "workflow",
            "url": f"{base}/models/{output('register', 'model-name')}/versions/"
            f"{output('register', 'version')}",
            "target": "_blank",
        },
    ]
