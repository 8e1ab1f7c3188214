"""Planning a local run: check the rendered template against Argo's rules and against the subset
this runner supports, then list its DAG tasks in the order they will run. Nothing runs here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from steps.cli import EXIT_BAD_INPUT, BadInput, StepError
from steps.stages import check_pipeline_parameters
from workflows import retry_expression
from workflows.argo_rules import (
    WORKFLOW_PARAMETER_PREFIX,
    ArgoRuleError,
    DependsTerm,
    SpecReading,
    artifact_from,
    go_duration_seconds,
    int_or_string,
    is_dns_subdomain,
    loop_field,
    read_backoff,
    read_spec,
    read_when,
    references,
    strings,
    substitute,
    task_output,
    workflow_parameter_values,
)
from workflows.validate_resources import validate_resources

CONTAINER_ROOT = "/work"
RUNNABLE_KINDS = ("WorkflowTemplate", "Workflow", "ClusterWorkflowTemplate")
LOOPS = ("withItems", "withParam")  # withSequence is refused by name
# Results a `depends` term may test here: no task is Daemoned, and a Failed one ends the run
# (Argo's failFast), so `.Failed`, `.Errored`, `.Omitted` could never be met.
SUPPORTED_RESULTS = frozenset({"Succeeded", "Skipped"})
WORKFLOW_VARIABLES = frozenset({"workflow.name", "workflow.uid", "workflow.namespace"})
# The most retries a template may ask for here (Argo has no bound; a huge one retries without end).
MAX_RETRY_LIMIT = 9999
# At most this many of Argo's problems are named in the one-line error.
PROBLEMS_SHOWN = 3

# Accepted and ignored: they change scheduling, pod security, resources, clean-up, metadata or
# where Argo stores artifacts, not what a step runs or computes.
IGNORED_TOP_FIELDS = frozenset({"apiVersion", "kind", "metadata", "status"})
IGNORED_SPEC_FIELDS = frozenset(
    {
        "serviceAccountName", "automountServiceAccountToken", "securityContext", "podGC",
        "ttlStrategy", "synchronization", "activeDeadlineSeconds", "podMetadata",
        "workflowMetadata", "artifactRepositoryRef", "archiveLogs", "imagePullSecrets",
        "nodeSelector", "affinity", "tolerations", "priorityClassName", "podPriorityClassName",
        "podDisruptionBudget", "metrics", "volumes", "executor",
    }
)  # fmt: skip
# Not `synchronization`: a template's mutex or semaphore makes Argo hold its pods back, which the
# runner does not do, so it is refused by name. The workflow's own (spec.synchronization, the
# release mutex) is done locally by the release lock (steps.processes.release_lock).
IGNORED_TEMPLATE_FIELDS = frozenset(
    {
        "metadata", "securityContext", "activeDeadlineSeconds", "timeout", "serviceAccountName",
        "automountServiceAccountToken", "archiveLocation", "nodeSelector", "affinity",
        "tolerations", "priorityClassName", "schedulerName", "metrics", "parallelism",
        "failFast", "volumes",
    }
)  # fmt: skip
IGNORED_CONTAINER_FIELDS = frozenset(
    {"name", "securityContext", "resources", "imagePullPolicy", "volumeMounts",
     "terminationMessagePath", "terminationMessagePolicy"}
)  # fmt: skip
IGNORED_PARAMETER_FIELDS = frozenset({"description", "globalName"})
IGNORED_ARTIFACT_FIELDS = frozenset({"archive", "archiveLogs", "artifactGC", "globalName"})
# Mount points the runner provides itself: /work is the task's work dir, /tmp stays /tmp.
PROVIDED_MOUNTS = frozenset({CONTAINER_ROOT, "/tmp"})
# Variables a container template may use here, beyond WORKFLOW_VARIABLES and workflow parameters:
# `inputs.parameters.N`, `inputs.artifacts.N.path`, `outputs.parameters.N.path`,
# `outputs.artifacts.N.path` (whether N exists, argo_rules has checked).
_CONTAINER_VARIABLES = {("inputs", "parameters"): 3, ("inputs", "artifacts"): 4,
                        ("outputs", "parameters"): 4, ("outputs", "artifacts"): 4}  # fmt: skip
_INPUT = "inputs.parameters."  # in a nested dag's tasks: that dag template's inputs


class LocalRunError(StepError):
    """The template uses something the local runner does not support, or a run cannot start."""


class BadTemplate(LocalRunError):
    """The template breaks Argo's rules, uses what the runner does not support, or needs what
    this machine lacks (an environment variable, a program): bad input, found before any task
    runs."""

    exit_code = EXIT_BAD_INPUT


class BadParameter(LocalRunError):
    """A workflow parameter the template (name, enum) or a stage's flag refuses: bad input."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class PlannedTask:
    """One DAG task, checked: the template it calls and what it waits for."""

    name: str
    template: dict[str, Any]  # the template it calls: a container, or a dag (see `dag`)
    spec: dict[str, Any]  # the DAG task itself
    needs: tuple[DependsTerm, ...]  # every term must be met (the runner supports only `&&`)
    loop: str | None = None  # withItems or withParam: the task runs once per item
    # The task calls a dag template (`template` is it): that DAG's tasks, planned, in run order.
    dag: tuple[PlannedTask, ...] | None = None


def workflow_values(template: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, str]:
    """Every workflow parameter's value: `given` over the template's defaults, each checked as
    the pipeline's first task checks it (steps/check_parameters.py) when its name is one the
    stage declarations give (steps/stages.py): with the flags of every stage that takes it.

    Raises:
        BadParameter (a LocalRunError, exit code 2): unknown name, value outside its enum, no
            value, or a value a stage would refuse (an empty `gate-tolerance`, `abc`, `-1`, a
            `gsod-path` where nothing is, ...).
    """
    spec = template.get("spec") or {}
    declared = (spec.get("arguments") or {}).get("parameters") or []
    try:
        values = workflow_parameter_values(declared, given)
        check_pipeline_parameters(values)
    except (ArgoRuleError, BadInput) as exc:
        raise BadParameter(str(exc)) from None
    return values


def plan(template: Mapping[str, Any]) -> list[PlannedTask]:
    """Check the whole template; return its DAG tasks in the order they will run.

    First Argo's own rules (the offline validator: fields, types, references, depends, cycles,
    arguments), then the subset this runner supports, each refused by name.

    Raises:
        LocalRunError: the first thing that cannot run here, with where it is.
    """
    kind = template.get("kind", "WorkflowTemplate") if isinstance(template, Mapping) else None
    if kind not in RUNNABLE_KINDS:
        raise BadTemplate(f"cannot run a {kind}; pass the rendered WorkflowTemplate")
    problems = validate_resources([template])
    if problems:
        more = (
            f" (+{len(problems) - PROBLEMS_SHOWN} more)" if len(problems) > PROBLEMS_SHOWN else ""
        )
        raise BadTemplate(
            "the template breaks Argo's rules: " + "; ".join(problems[:PROBLEMS_SHOWN]) + more
        )
    _check_fields(template, IGNORED_TOP_FIELDS | {"spec"}, "the resource")
    spec = template.get("spec") or {}
    allowed = IGNORED_SPEC_FIELDS | {"entrypoint", "arguments", "templates", "parallelism"}
    _check_fields(spec, allowed, "spec")
    # An int64 (the validator has checked); Argo starts no pod while its active pods number at
    # least spec.parallelism (v4.1.2 operator.go checkParallelism): below 1 it waits for ever.
    if spec.get("parallelism") is not None and spec["parallelism"] < 1:
        raise BadTemplate(
            f"spec.parallelism {spec['parallelism']} must be at least 1: Argo would start no "
            "pod and wait for ever"
        )
    _check_fields(spec.get("arguments") or {}, {"parameters"}, "spec.arguments")
    for param in (spec.get("arguments") or {}).get("parameters") or []:
        allowed = {"name", "value", "enum"} | IGNORED_PARAMETER_FIELDS
        _check_fields(param, allowed, f"parameter {param['name']}")
    for volume in spec.get("volumes") or []:
        _check_volume(volume, "spec.volumes")
    reading = read_spec(spec)
    entry = reading.templates[spec["entrypoint"]]
    if not isinstance(entry.get("dag"), Mapping):
        kinds = sorted(set(entry) & {"steps", "container", "script", "resource", "suspend"})
        raise BadTemplate(
            f"unsupported feature: entrypoint template {entry['name']!r} is {'/'.join(kinds)};"
            " it must be a dag"
        )
    _check_fields(entry, IGNORED_TEMPLATE_FIELDS | {"name", "dag"}, f"template {entry['name']}")
    return _plan_dag(reading, entry, ())


def _plan_dag(
    reading: SpecReading, template: Mapping[str, Any], callers: tuple[str, ...]
) -> list[PlannedTask]:
    """The tasks of dag `template`, checked and in run order; `callers`: the dag templates whose
    tasks call it, outermost first (none for the entrypoint)."""
    where_dag = f"dag of {template['name']}"
    _check_fields(template["dag"], {"tasks", "failFast"}, where_dag)
    # The runner stops at the first failure, as Argo's default `failFast: true` does (Argo v4.1.2
    # pkg/apis/workflow/v1alpha1/workflow_types.go DAGTemplate.FailFast); `false` would have Argo
    # run the other branches to the end.
    if template["dag"].get("failFast", True) is not True:
        raise BadTemplate(
            f"unsupported feature in {where_dag}: failFast "
            f"{template['dag']['failFast']!r} (the runner stops at the first failure, as with true)"
        )
    inputs = frozenset(p["name"] for p in (template.get("inputs") or {}).get("parameters") or [])
    dag = reading.dags[template["name"]]
    looping = {name for name in dag.order if loop_field(dag.tasks[name])}
    tasks = []
    for name in dag.order:
        raw = dag.tasks[name]
        where = f"task {name}" if not callers else f"task {name} of {template['name']}"
        allowed = {"name", "template", "depends", "dependencies", "when", "arguments", *LOOPS}
        _check_fields(raw, allowed, where)
        loop = loop_field(raw)
        if loop and callers:
            raise BadTemplate(
                f"unsupported feature in {where}: {loop} in a nested dag (only the entrypoint's "
                "tasks loop here)"
            )
        if raw.get("template") not in reading.templates:
            raise BadTemplate(f"unsupported feature in {where}: no `template` (templateRef?)")
        called = reading.templates[raw["template"]]
        inner = None
        if isinstance(called.get("dag"), Mapping):
            inner = tuple(_plan_nested_dag(reading, called, (*callers, template["name"])))
        else:
            _check_container_template(called)
        depends = dag.depends[name]
        if depends.operators - {"&&"}:
            raise BadTemplate(
                f"unsupported feature in {where}: depends expression {depends.text!r}"
            )
        for term in depends.terms:
            if term.result is not None and term.result not in SUPPORTED_RESULTS:
                raise BadTemplate(
                    f"unsupported feature in {where}: depends term '{term.task}.{term.result}'"
                )
        _check_task(raw, called, where, looping, inputs)
        tasks.append(PlannedTask(name, dict(called), dict(raw), depends.terms, loop, inner))
    for task in tasks:
        for a in (task.spec.get("arguments") or {}).get("artifacts") or []:
            source = artifact_from(a.get("from"))
            if source and source[0] in looping:
                raise BadTemplate(
                    f"task {task.name}: artifact {a['name']} comes from {source[0]}, which "
                    "loops: Argo aggregates the parameters of a loop's items, not their artifacts "
                    "(pass them through key-only artifacts)"
                )
    return tasks


def _plan_nested_dag(
    reading: SpecReading, template: Mapping[str, Any], callers: tuple[str, ...]
) -> list[PlannedTask]:
    """A dag template a task calls: input parameters only (Argo substitutes them into the whole
    template before it runs the DAG: v4.1.2 workflow/controller/operator.go executeTemplate,
    common.ProcessArgs, then executeDAG), no outputs, memoize or retries of its own."""
    where = f"template {template['name']}"
    if template["name"] in callers:
        raise BadTemplate(
            f"unsupported feature in {where}: it calls itself ({' -> '.join(callers)} -> "
            f"{template['name']})"
        )
    _check_fields(template, IGNORED_TEMPLATE_FIELDS | {"name", "dag", "inputs"}, where)
    _check_fields(template.get("inputs") or {}, {"parameters"}, f"{where}.inputs")
    for p in (template.get("inputs") or {}).get("parameters") or []:
        allowed = {"name", "default", "value", "enum"} | IGNORED_PARAMETER_FIELDS
        _check_fields(p, allowed, f"{where} input {p['name']}")
    return _plan_dag(reading, template, callers)


def parallelism(template: Mapping[str, Any]) -> int | None:
    """How many items of a looping task may run at once: the smaller of `spec.parallelism` (the
    whole workflow's pods) and the entrypoint DAG's `parallelism` (the pods of that invocation;
    0 or less sets no bound, Template.HasParallelism); None when neither is set (Argo then
    starts every item at once). Argo v4.1.2: pkg/apis/workflow/v1alpha1/workflow_types.go
    (WorkflowSpec and Template `Parallelism`, both `*int64`), docs/parallelism.md.
    """
    spec = template.get("spec") or {}
    entry = next(
        (t for t in spec.get("templates") or [] if t.get("name") == spec.get("entrypoint")), {}
    )
    bounds = [spec.get("parallelism"), entry.get("parallelism")]
    bounds = [int(bound) for bound in bounds if bound is not None and int(bound) > 0]
    return min(bounds) if bounds else None


def under_work(path: Any) -> bool:
    """True if the container path `path` lies under /work once `..` and `.` are resolved."""
    if not isinstance(path, str) or not path.startswith("/"):
        return False
    normal = posixpath.normpath(path)
    return normal == CONTAINER_ROOT or normal.startswith(CONTAINER_ROOT + "/")


def _check_fields(obj: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    extra = sorted(set(obj) - set(allowed))
    if extra:
        raise BadTemplate(f"unsupported feature in {where}: {', '.join(extra)}")


def _check_volume(volume: Mapping[str, Any], where: str) -> None:
    # A pod whose optional Secret does not exist starts with nothing mounted: locally it is absent.
    optional_secret = set(volume) == {"name", "secret"} and (volume["secret"] or {}).get("optional")
    if set(volume) - {"name", "emptyDir"} and not optional_secret:
        raise BadTemplate(
            f"unsupported feature in {where}: volume {volume.get('name')!r}"
            " (only emptyDir and optional secret volumes)"
        )


def _check_container_template(tpl: Mapping[str, Any]) -> None:
    where = f"template {tpl['name']}"
    for kind in ("steps", "script", "resource", "suspend", "dag", "data", "http", "plugin"):
        if kind in tpl:
            raise BadTemplate(f"unsupported feature in {where}: {kind} template")
    allowed = IGNORED_TEMPLATE_FIELDS | {
        "name", "container", "inputs", "outputs", "retryStrategy", "memoize",
    }  # fmt: skip
    _check_fields(tpl, allowed, where)
    if tpl.get("memoize") is not None:
        _check_memoize(tpl["memoize"], where)
    container = tpl.get("container")
    if container is None:
        raise BadTemplate(f"{where}: no container")
    allowed = IGNORED_CONTAINER_FIELDS | {"image", "command", "args", "env", "workingDir"}
    _check_fields(container, allowed, f"{where}.container")
    volumes = {v["name"]: v for v in tpl.get("volumes") or []}
    for volume in volumes.values():
        _check_volume(volume, f"{where}.volumes")
    for mount in container.get("volumeMounts") or []:
        path = mount.get("mountPath")
        if path not in PROVIDED_MOUNTS and "secret" not in volumes.get(mount.get("name"), {}):
            raise BadTemplate(f"unsupported feature in {where}: volume mount at {path}")
    for item in container.get("env") or []:
        _check_fields(item, {"name", "value", "valueFrom"}, f"{where} env {item.get('name')}")
        if references(str(item.get("name"))):  # Argo fills it; a step here gets it as written
            raise BadTemplate(f"unsupported feature in {where}: env name {item['name']!r}")
    inputs, outputs = tpl.get("inputs") or {}, tpl.get("outputs") or {}
    _check_fields(inputs, {"parameters", "artifacts"}, f"{where}.inputs")
    _check_fields(outputs, {"parameters", "artifacts"}, f"{where}.outputs")
    for p in inputs.get("parameters") or []:
        allowed = {"name", "default", "value", "enum"} | IGNORED_PARAMETER_FIELDS
        _check_fields(p, allowed, f"{where} input {p['name']}")
    for p in outputs.get("parameters") or []:
        _check_fields(p, {"name", "valueFrom"} | IGNORED_PARAMETER_FIELDS, f"{where} {p['name']}")
        value_from = p.get("valueFrom") or {}
        _check_fields(value_from, {"path", "default"}, f"{where} {p['name']}.valueFrom")
        if "path" not in value_from:
            raise BadTemplate(f"{where}: output parameter {p['name']} needs valueFrom.path")
        _check_variables(value_from, lambda name: False, where)  # a literal path, read as is
        if not under_work(value_from["path"]):
            raise BadTemplate(
                f"{where}: output parameter {p['name']} path must be under {CONTAINER_ROOT}"
            )
    for a in [*(inputs.get("artifacts") or []), *(outputs.get("artifacts") or [])]:
        allowed = {"name", "path", "optional", "s3"} | IGNORED_ARTIFACT_FIELDS
        _check_fields(a, allowed, f"{where} artifact {a['name']}")
        _check_key_only(a, f"{where} artifact {a['name']}")
        # Read as written, like an output parameter's path: a `{{...}}` in it was used literally.
        _check_variables(a.get("path"), lambda name: False, f"{where} artifact {a['name']} path")
        if not under_work(a.get("path") or ""):
            raise BadTemplate(f"{where}: artifact {a['name']} path must be under {CONTAINER_ROOT}")
    retry = tpl.get("retryStrategy") or {}
    allowed = {"limit", "retryPolicy", "backoff", "expression"}
    _check_fields(retry, allowed, f"{where}.retryStrategy")
    # Argo >= 3.5: with an expression and no policy, the expression alone decides (Always).
    default_policy = "Always" if retry.get("expression") else "OnFailure"
    if retry.get("retryPolicy", default_policy) not in ("OnFailure", "Always"):
        raise BadTemplate(f"unsupported feature in {where}: retryPolicy {retry['retryPolicy']}")
    backoff = retry.get("backoff") or {}
    _check_fields(backoff, {"duration", "factor", "cap", "maxDuration"}, f"{where} backoff")
    try:
        read_backoff(backoff)
    except ArgoRuleError as exc:
        raise BadTemplate(f"{where}.retryStrategy: {exc}") from None
    # `limit` is an IntOrString (Argo v4.1.2 workflow_types.go, RetryStrategy.Limit): a whole
    # number of retries, and none means no end of them (operator.go, processNodeRetries); the
    # bound of 9999 is ours. Checked here, not when the task first fails.
    if tpl.get("retryStrategy") is not None:
        try:
            limit = int_or_string(retry.get("limit"), "retryStrategy.limit")
        except ArgoRuleError as exc:
            raise BadTemplate(f"{where}: {exc} (a whole number from 0 to 9999)") from None
        if not 0 <= limit <= MAX_RETRY_LIMIT:
            raise BadTemplate(
                f"{where}.retryStrategy.limit {limit} must be a whole number from 0 to "
                f"{MAX_RETRY_LIMIT}"
            )
    if retry.get("expression"):
        try:
            retry_expression.parse(str(retry["expression"]))
        except retry_expression.UnsupportedExpression as exc:
            raise BadTemplate(
                f"unsupported feature in {where}: retryStrategy.expression {exc}"
            ) from None
        except retry_expression.ExpressionError as exc:  # fails whenever Argo evaluates it
            raise BadTemplate(f"{where}: retryStrategy.expression {exc}") from None

    def supported(name: str) -> bool:
        parts = name.split(".")
        size = _CONTAINER_VARIABLES.get(tuple(parts[:2]))
        return _global_variable(name) or (size == len(parts) and (size == 3 or parts[3] == "path"))

    _check_variables(container, supported, where)
    keys = [
        a.get("s3") for a in [*(inputs.get("artifacts") or []), *(outputs.get("artifacts") or [])]
    ]
    _check_variables([keys, tpl.get("memoize")], supported, where)


def _check_memoize(memoize: Mapping[str, Any], where: str) -> None:
    """`memoize`: a key, a maxAge Argo can parse, a ConfigMap cache (the only kind Argo has)."""
    _check_fields(memoize, {"key", "maxAge", "cache"}, f"{where}.memoize")
    _check_fields(memoize.get("cache") or {}, {"configMap"}, f"{where}.memoize.cache")
    config_map = (memoize.get("cache") or {}).get("configMap") or {}
    _check_fields(config_map, {"name", "key"}, f"{where}.memoize.cache.configMap")
    if not config_map.get("name"):
        raise BadTemplate(f"{where}: memoize.cache.configMap needs a name")
    # A ConfigMap name is a DNS subdomain: no '/', no '..', so also a file name in the cache dir.
    if not is_dns_subdomain(str(config_map["name"])):
        raise BadTemplate(
            f"{where}: memoize.cache.configMap.name {str(config_map['name'])[:80]!r} is not a "
            "ConfigMap name (lower-case letters, digits, '-' and '.', at most 253)"
        )
    max_age = str(memoize.get("maxAge", ""))
    try:
        if not references(max_age):  # else its value is read before the run (preflight)
            go_duration_seconds(max_age)
    except ArgoRuleError as exc:
        raise BadTemplate(f"{where}: memoize {exc}") from None


def _check_key_only(artifact: Mapping[str, Any], where: str) -> None:
    """An `s3` location must be key-only (the bucket and credentials are the repository's,
    docs/key-only-artifacts.md): the runner keeps those objects in its cache directory."""
    if "s3" not in artifact:
        return
    s3 = artifact["s3"] or {}
    if set(s3) != {"key"} or not str(s3.get("key") or "").strip():
        raise BadTemplate(
            f"unsupported feature in {where}: s3 {sorted(s3)} (only key-only artifacts, "
            "s3: {key: ...}, whose repository is the runner's cache directory)"
        )


def _check_task(
    raw: Mapping[str, Any],
    called: Mapping[str, Any],
    where: str,
    looping: set[str],
    inputs: frozenset[str] = frozenset(),
) -> None:
    """Arguments are plain values, task outputs this runner hands over, or key-only artifacts;
    `when` has one shape; a loop is withItems or withParam. `looping`: the tasks that loop (their
    `outputs.parameters` is the list of their items' outputs); `inputs`: the input parameters of
    the dag template the task is in."""
    arguments = raw.get("arguments") or {}
    _check_fields(arguments, {"parameters", "artifacts"}, f"{where}.arguments")
    loops = loop_field(raw) is not None

    def supported(name: str) -> bool:
        output = task_output(name)
        if output is not None and output[1] == "parameters":  # a loop's: all its items' outputs
            task, _, parameter = output
            return "." not in parameter and (parameter != "" or task in looping)
        return (
            _global_variable(name)
            or (loops and (name == "item" or name.startswith("item.")))
            or (name.startswith(_INPUT) and name[len(_INPUT) :] in inputs)
        )

    keys = [a.get("s3") for a in arguments.get("artifacts") or []]
    _check_variables(
        [raw.get("when", ""), arguments.get("parameters") or [], keys, raw.get("withParam", "")],
        supported,
        where,
    )
    if loops:
        for value in _loop_values(raw.get("withItems")):
            if isinstance(value, Mapping | list):
                raise BadTemplate(
                    f"unsupported feature in {where}: withItems item {value!r} holds a list or "
                    "map (only strings, numbers, booleans, and maps of those)"
                )
    if raw.get("when"):  # the shape is read now, the values once the inputs exist
        try:
            read_when(substitute(raw["when"], lambda _name: "x"))
        except ArgoRuleError as exc:
            raise BadTemplate(f"{where}: {exc}") from None
    for p in arguments.get("parameters") or []:
        allowed = {"name", "value"} | IGNORED_PARAMETER_FIELDS
        _check_fields(p, allowed, f"{where} argument {p['name']}")
    for a in arguments.get("artifacts") or []:
        _check_fields(a, {"name", "from", "s3"}, f"{where} argument artifact {a['name']}")
        if "s3" in a:
            _check_key_only(a, f"{where} argument artifact {a['name']}")
        elif not artifact_from(a.get("from")):
            raise BadTemplate(
                f"unsupported feature in {where}: artifact {a['name']} must come"
                f" from one task's output artifact or a key-only s3 key, not {a.get('from')!r}"
            )


def _loop_values(items: Any) -> list[Any]:
    """withItems' items, and a map item's values: what must be scalars here."""
    values = []
    for item in items or []:
        values.extend(item.values() if isinstance(item, Mapping) else [item])
    return values


def _global_variable(name: str) -> bool:
    return name in WORKFLOW_VARIABLES or name.startswith(WORKFLOW_PARAMETER_PREFIX)


def _check_variables(obj: Any, supported: Callable[[str], bool], where: str) -> None:
    for _, text in strings(obj):
        for name in references(text):
            if name.startswith("="):
                raise BadTemplate(f"unsupported feature in {where}: expression tag {{{{{name}}}}}")
            if not supported(name):
                raise BadTemplate(f"unsupported variable {{{{{name}}}}} in {where}")
