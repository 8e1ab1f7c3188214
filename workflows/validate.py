"""Strict offline checks of rendered Argo resources: fields, types, {{...}} references, cron.

Hera's models ignore unknown keys and Argo's JSON schema lacks `additionalProperties: false`.
"""

from __future__ import annotations

import re
import types
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin

import pydantic
from hera.workflows import models as m

RESOURCE_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "WorkflowTemplate": m.WorkflowTemplate,
    "ClusterWorkflowTemplate": m.ClusterWorkflowTemplate,
    "CronWorkflow": m.CronWorkflow,
    "Workflow": m.Workflow,
}
API_VERSION = "argoproj.io/v1alpha1"
# Argo: "cron workflow name ... must not be more than 52 characters long" (it appends a suffix).
CRON_NAME_MAX = 52

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL_RE = re.compile(rf"^{_DNS_LABEL}$")
_DNS_SUBDOMAIN_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
# Argo's workflowFieldNameFmt for template and task names, at most 128 characters.
_FIELD_NAME_RE = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
_PARAM_NAME_RE = re.compile(r"^[-a-zA-Z0-9_]+$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_REFERENCE_RE = re.compile(r"{{\s*([^{}]*?)\s*}}")

# Variables Argo defines for every workflow (docs: workflow/variables.md, "Global").
_WORKFLOW_GLOBALS = {
    "workflow.name",
    "workflow.namespace",
    "workflow.mainEntrypoint",
    "workflow.serviceAccountName",
    "workflow.uid",
    "workflow.parameters",
    "workflow.annotations",
    "workflow.labels",
    "workflow.creationTimestamp",
    "workflow.priority",
    "workflow.duration",
    "workflow.scheduledTime",
    "workflow.status",
    "workflow.failures",
}
_WORKFLOW_PREFIXES = (
    "workflow.annotations.",
    "workflow.labels.",
    "workflow.creationTimestamp.",
    "workflow.outputs.parameters.",
    "workflow.outputs.artifacts.",
)
# Variables of the template being run (container, script, resource templates).
_TEMPLATE_GLOBALS = {"pod.name", "node.name", "retries", "inputs.parameters"}
_TEMPLATE_PREFIXES = ("lastRetry.",)
# Per-task fields other than outputs that `tasks.<name>.` may name.
_TASK_FIELDS = {"id", "ip", "status", "startedAt", "finishedAt", "exitCode", "hostNodeName"}
_DEPENDS_WORDS = re.compile(r"[A-Za-z0-9][-A-Za-z0-9]*(?:\.[A-Za-z]+)?")


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict"}


class ResourceValidationError(ValueError):
    """Rendered resources break Argo's rules; `problems` lists each one with its JSON path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems))


@dataclass
class _Problems:
    items: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


def validate_resources(resources: Iterable[Mapping[str, Any]]) -> list[str]:
    """Check rendered Argo resources together (a CronWorkflow may reference a WorkflowTemplate).

    Args:
        resources: plain dicts as `kubectl apply` would read them.

    Returns:
        One line per problem, each starting with the resource and JSON path; empty when valid.
    """
    resources = list(resources)
    problems = _Problems()
    templates = {
        r.get("metadata", {}).get("name"): r
        for r in resources
        if r.get("kind") in ("WorkflowTemplate", "ClusterWorkflowTemplate")
    }
    for resource in resources:
        kind = resource.get("kind")
        label = f"{kind}/{resource.get('metadata', {}).get('name', '?')}"
        model = RESOURCE_MODELS.get(kind)  # type: ignore[arg-type]
        if model is None:
            problems.add(f"{label} $.kind", f"unsupported kind {kind!r}")
            continue
        before = len(problems.items)
        _check_fields(model, resource, f"{label} $", problems)
        _check_types(model, resource, label, problems)
        if len(problems.items) > before:
            continue  # references in a malformed tree would only add noise
        if resource.get("apiVersion") != API_VERSION:
            problems.add(f"{label} $.apiVersion", f"must be {API_VERSION}")
        _check_metadata(kind, resource.get("metadata", {}), label, problems)
        spec = resource.get("spec", {})
        if kind == "CronWorkflow":
            _check_cron(spec, label, problems)
            _check_workflow_spec(
                spec.get("workflowSpec", {}), templates, f"{label} $.spec.workflowSpec", problems
            )
        else:
            _check_workflow_spec(spec, templates, f"{label} $.spec", problems)
    return problems.items


def check_resources(resources: Iterable[Mapping[str, Any]]) -> None:
    """Raise `ResourceValidationError` listing every problem; return quietly when all is valid."""
    problems = validate_resources(resources)
    if problems:
        raise ResourceValidationError(problems)


# --- structure: unknown keys and types --------------------------------------------------------


def _check_fields(
    model: type[pydantic.BaseModel], data: Any, path: str, problems: _Problems
) -> None:
    """Reject keys the Hera model does not define, recursing through nested models."""
    if not isinstance(data, Mapping):
        return  # a wrong type is reported by pydantic in _check_types
    if issubclass(model, pydantic.RootModel):
        _check_value(model.model_fields["root"].annotation, data, path, problems)
        return
    by_key = {(f.alias or name): f for name, f in model.model_fields.items()}
    for key, value in data.items():
        info = by_key.get(key)
        if info is None:
            problems.add(f"{path}.{key}", f"unknown field (not defined by {model.__name__})")
            continue
        _check_value(info.annotation, value, f"{path}.{key}", problems)


def _check_value(annotation: Any, value: Any, path: str, problems: _Problems) -> None:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        candidates = [a for a in get_args(annotation) if a is not type(None)]
        for candidate in candidates:
            if _shape_matches(candidate, value):
                _check_value(candidate, value, path, problems)
                return
        return
    if origin is list and isinstance(value, list):
        (item,) = get_args(annotation)
        for i, element in enumerate(value):
            _check_value(item, element, f"{path}[{i}]", problems)
        return
    if origin is dict and isinstance(value, Mapping):
        _, item = get_args(annotation)
        for key, element in value.items():
            _check_value(item, element, f"{path}.{key}", problems)
        return
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        _check_fields(annotation, value, path, problems)


def _shape_matches(annotation: Any, value: Any) -> bool:
    origin = get_origin(annotation)
    if origin is list:
        return isinstance(value, list)
    if origin is dict:
        return isinstance(value, Mapping)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.RootModel):
        return True
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return isinstance(value, Mapping)
    return not isinstance(value, (list, Mapping))


def _check_types(
    model: type[pydantic.BaseModel], data: Mapping[str, Any], label: str, problems: _Problems
) -> None:
    """Let pydantic parse the whole resource; report each type error with its JSON path."""
    try:
        model.model_validate(data)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            # Union members appear in `loc` as type tags (`str`, `int`); they are not JSON keys.
            loc = [p for p in error["loc"] if p not in _UNION_TAGS and "[" not in str(p)]
            path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
            problems.add(f"{label} {path}", error["msg"])


# --- names -------------------------------------------------------------------------------------


def _check_metadata(
    kind: str, metadata: Mapping[str, Any], label: str, problems: _Problems
) -> None:
    name = metadata.get("name")
    generate_name = metadata.get("generateName")
    path = f"{label} $.metadata"
    if name is None and generate_name is None:
        problems.add(path, "needs name or generateName")
    if name is not None:
        limit = CRON_NAME_MAX if kind == "CronWorkflow" else 253
        if not _DNS_SUBDOMAIN_RE.match(name):
            problems.add(f"{path}.name", f"{name!r} is not a valid RFC 1123 name")
        if len(name) > limit:
            problems.add(
                f"{path}.name", f"{name!r} is {len(name)} characters; {kind} allows {limit}"
            )
    if generate_name is not None and not _DNS_SUBDOMAIN_RE.match(generate_name.rstrip("-") or "-"):
        problems.add(f"{path}.generateName", f"{generate_name!r} is not a valid RFC 1123 prefix")
    namespace = metadata.get("namespace")
    if namespace is not None and not (_DNS_LABEL_RE.match(namespace) and len(namespace) <= 63):
        problems.add(f"{path}.namespace", f"{namespace!r} is not a valid RFC 1123 label")
    _check_labels(metadata.get("labels") or {}, f"{path}.labels", problems)


def _check_labels(labels: Mapping[str, str], path: str, problems: _Problems) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and not (_DNS_SUBDOMAIN_RE.match(prefix) and len(prefix) <= 253):
            problems.add(f"{path}.{key}", "label key prefix is not a DNS subdomain")
        if not (_LABEL_NAME_RE.match(name) and len(name) <= 63):
            problems.add(f"{path}.{key}", "label key name is not valid")
        if value and not (_LABEL_NAME_RE.match(value) and len(value) <= 63):
            problems.add(f"{path}.{key}", f"label value {value!r} is not valid")


def _check_field_name(name: str, path: str, problems: _Problems) -> None:
    if not (_FIELD_NAME_RE.match(name) and len(name) <= 128):
        problems.add(path, f"name {name!r} must match [a-zA-Z0-9][-a-zA-Z0-9]* (<= 128)")


# --- cron --------------------------------------------------------------------------------------

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {n: i + 1 for i, n in enumerate(_MONTHS)},
    ),
    ("day of week", 0, 6, {n: i for i, n in enumerate(_WEEKDAYS)}),
)
_CRON_DESCRIPTORS = {
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
}
_DURATION_RE = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def parse_cron(expression: str) -> list[set[int]] | None:
    """Parse a 5-field cron expression (the syntax Argo's cron library accepts).

    Args:
        expression: e.g. `0 0 * * 0`; `@weekly` style descriptors and `@every 1h` are accepted.

    Returns:
        The allowed values of each field (None for descriptors).

    Raises:
        ValueError: naming the field and the part that does not parse.
    """
    text = expression.strip()
    if text.startswith("@"):
        if text in _CRON_DESCRIPTORS:
            return None
        if text.startswith("@every ") and _DURATION_RE.match(text[len("@every ") :].strip()):
            return None
        raise ValueError(f"unknown cron descriptor {text!r}")
    parts = text.split()
    if len(parts) != len(_CRON_FIELDS):
        raise ValueError(f"{expression!r} has {len(parts)} fields; cron needs 5")
    return [_parse_cron_field(part, *spec) for part, spec in zip(parts, _CRON_FIELDS, strict=True)]


def _parse_cron_field(
    text: str, name: str, low: int, high: int, names: Mapping[str, int]
) -> set[int]:
    values: set[int] = set()

    def number(token: str) -> int:
        value = names.get(token.lower()) if token.isalpha() else None
        if value is None:
            if not token.isdigit():
                raise ValueError(f"{name} field: {token!r} is not a number")
            value = int(token)
        if not low <= value <= high:
            raise ValueError(f"{name} field: {value} is outside {low}-{high}")
        return value

    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = number(first), number(last)
            if start > end:
                raise ValueError(f"{name} field: range {base!r} runs backwards")
        else:
            start = number(base)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return values


def _check_cron(spec: Mapping[str, Any], label: str, problems: _Problems) -> None:
    path = f"{label} $.spec"
    schedules = spec.get("schedules") or []
    if not schedules:
        problems.add(f"{path}.schedules", "needs at least one schedule")
    for i, schedule in enumerate(schedules):
        try:
            parse_cron(schedule)
        except ValueError as exc:
            problems.add(f"{path}.schedules[{i}]", f"bad cron expression: {exc}")
    timezone = spec.get("timezone")
    if timezone:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problems.add(f"{path}.timezone", f"unknown IANA time zone {timezone!r}")
    policy = spec.get("concurrencyPolicy")
    if policy is not None and policy not in ("Allow", "Forbid", "Replace"):
        problems.add(f"{path}.concurrencyPolicy", f"{policy!r} is not Allow, Forbid or Replace")
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        if spec.get(key) is not None and spec[key] < 0:
            problems.add(f"{path}.{key}", "must not be negative")


# --- workflow spec: templates, DAGs and {{...}} references ---------------------------------------


def _parameter_names(arguments: Mapping[str, Any] | None) -> list[str]:
    return [p["name"] for p in (arguments or {}).get("parameters") or []]


def _check_workflow_spec(
    spec: Mapping[str, Any],
    known_templates: Mapping[str | None, Mapping[str, Any]],
    path: str,
    problems: _Problems,
) -> None:
    global_params = set(_parameter_names(spec.get("arguments")))
    for i, param in enumerate((spec.get("arguments") or {}).get("parameters") or []):
        _check_parameter(param, f"{path}.arguments.parameters[{i}]", problems)

    ref = spec.get("workflowTemplateRef")
    if ref is not None:
        referenced = known_templates.get(ref.get("name"))
        if referenced is None:
            return  # the template lives on the cluster; nothing more to resolve offline
        declared = {
            p["name"]: p
            for p in (referenced.get("spec", {}).get("arguments") or {}).get("parameters") or []
        }
        for i, param in enumerate((spec.get("arguments") or {}).get("parameters") or []):
            ppath = f"{path}.arguments.parameters[{i}]"
            target = declared.get(param["name"])
            if target is None:
                problems.add(
                    ppath,
                    f"{param['name']!r} is not a parameter of WorkflowTemplate {ref.get('name')!r}",
                )
            elif target.get("enum") and param.get("value") not in target["enum"]:
                problems.add(
                    f"{ppath}.value", f"{param.get('value')!r} is not one of {target['enum']}"
                )
        return

    templates = {t.get("name"): t for t in spec.get("templates") or []}
    entrypoint = spec.get("entrypoint")
    if entrypoint is None or entrypoint not in templates:
        problems.add(f"{path}.entrypoint", f"{entrypoint!r} is not a template of this workflow")
    spec_volumes = {v["name"] for v in spec.get("volumes") or []}
    spec_volumes |= {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
    scope = _GlobalScope(global_params)
    for i, template in enumerate(spec.get("templates") or []):
        tpath = f"{path}.templates[{i}]"
        _check_field_name(template.get("name", ""), f"{tpath}.name", problems)
        _check_template(template, templates, spec_volumes, scope, tpath, problems)
    _check_references(_without(spec, "templates"), scope.resolve_global, path, problems)


@dataclass
class _GlobalScope:
    parameters: set[str]

    def resolve_global(self, name: str) -> str | None:
        """None when `name` is a global variable Argo knows, else why not."""
        if name.startswith("workflow.parameters."):
            param = name[len("workflow.parameters.") :]
            if param in self.parameters:
                return None
            return f"workflow parameter {param!r} is not defined in spec.arguments.parameters"
        if name in _WORKFLOW_GLOBALS or name.startswith(_WORKFLOW_PREFIXES):
            return None
        return "unknown variable"


def _check_parameter(param: Mapping[str, Any], path: str, problems: _Problems) -> None:
    name = param.get("name", "")
    if not _PARAM_NAME_RE.match(name):
        problems.add(f"{path}.name", f"parameter name {name!r} must match [-a-zA-Z0-9_]+")
    enum = param.get("enum")
    value = param.get("value", param.get("default"))
    if enum and value is not None and value not in enum:
        problems.add(f"{path}.value", f"{value!r} is not one of its enum {enum}")


def _without(data: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def _check_template(
    template: Mapping[str, Any],
    templates: Mapping[str, Mapping[str, Any]],
    spec_volumes: set[str],
    scope: _GlobalScope,
    path: str,
    problems: _Problems,
) -> None:
    inputs = template.get("inputs") or {}
    outputs = template.get("outputs") or {}
    in_params = {p["name"] for p in inputs.get("parameters") or []}
    in_artifacts = {a["name"]: a for a in inputs.get("artifacts") or []}
    out_params = {p["name"] for p in outputs.get("parameters") or []}
    out_artifacts = {a["name"]: a for a in outputs.get("artifacts") or []}
    for kind, items in (("inputs", inputs), ("outputs", outputs)):
        for j, param in enumerate(items.get("parameters") or []):
            _check_parameter(param, f"{path}.{kind}.parameters[{j}]", problems)

    def resolve_local(name: str) -> str | None:
        if name.startswith("inputs.parameters."):
            param = name[len("inputs.parameters.") :]
            return None if param in in_params else f"template has no input parameter {param!r}"
        if name.startswith("inputs.artifacts."):
            art, _, attr = name[len("inputs.artifacts.") :].partition(".")
            if art not in in_artifacts:
                return f"template has no input artifact {art!r}"
            return None if attr in ("", "path") else f"artifacts have no {attr!r} variable"
        if name.startswith("outputs.parameters.") or name.startswith("outputs.artifacts."):
            group, _, rest = name[len("outputs.") :].partition(".")
            item, _, attr = rest.partition(".")
            declared = out_params if group == "parameters" else out_artifacts
            if item not in declared:
                return f"template has no output {group[:-1]} {item!r}"
            return None if attr == "path" else "only .path of an output is defined here"
        if name in _TEMPLATE_GLOBALS or name.startswith(_TEMPLATE_PREFIXES):
            return None
        return scope.resolve_global(name)

    volumes = spec_volumes | {v["name"] for v in template.get("volumes") or []}
    for key in ("container", "script"):
        container = template.get(key)
        if container is None:
            continue
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if mount["name"] not in volumes:
                problems.add(
                    f"{path}.{key}.volumeMounts[{j}].name",
                    f"volume {mount['name']!r} is not defined in the template or spec.volumes",
                )

    dag = template.get("dag")
    if dag is not None:
        _check_dag(dag, templates, resolve_local, f"{path}.dag", problems)
        _check_references(_without(template, "dag"), resolve_local, path, problems)
    else:
        _check_references(template, resolve_local, path, problems)


def _depends_names(depends: str) -> set[str]:
    """Task names in an enhanced `depends` expression such as `a && (b.Succeeded || c.Failed)`."""
    cleaned = re.sub(r"&&|\|\||[!()]", " ", depends)
    return {word.split(".")[0] for word in _DEPENDS_WORDS.findall(cleaned)}


def _check_dag(
    dag: Mapping[str, Any],
    templates: Mapping[str, Mapping[str, Any]],
    resolve_template: Any,
    path: str,
    problems: _Problems,
) -> None:
    tasks = {t.get("name"): t for t in dag.get("tasks") or []}
    parents: dict[str, set[str]] = {}
    for i, task in enumerate(dag.get("tasks") or []):
        name = task.get("name", "")
        tpath = f"{path}.tasks[{i}]"
        _check_field_name(name, f"{tpath}.name", problems)
        upstream = set(task.get("dependencies") or [])
        if task.get("depends"):
            upstream |= _depends_names(task["depends"])
        for dep in sorted(upstream - set(tasks)):
            problems.add(f"{tpath}", f"depends on {dep!r}, which is not a task of this DAG")
        parents[name] = upstream & set(tasks)
        if task.get("template") is not None and task["template"] not in templates:
            problems.add(f"{tpath}.template", f"{task['template']!r} is not a template")

    ancestors = _ancestors(parents, path, problems)

    for i, task in enumerate(dag.get("tasks") or []):
        name = task.get("name", "")
        tpath = f"{path}.tasks[{i}]"
        target = templates.get(task.get("template"))
        looping = any(task.get(k) is not None for k in ("withItems", "withParam", "withSequence"))

        def resolve_task(ref: str, name: str = name, looping: bool = looping) -> str | None:
            if ref.startswith("tasks."):
                return _resolve_task_ref(ref, name, tasks, templates, ancestors)
            if looping and (ref == "item" or ref.startswith("item.")):
                return None
            return resolve_template(ref)

        _check_references(task, resolve_task, tpath, problems)
        if target is not None:
            _check_task_arguments(task, target, tpath, problems)


def _ancestors(
    parents: Mapping[str, set[str]], path: str, problems: _Problems
) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}

    def visit(name: str, trail: tuple[str, ...]) -> set[str]:
        if name in result:
            return result[name]
        if name in trail:
            problems.add(path, f"dependency cycle: {' -> '.join((*trail, name))}")
            return set()
        found: set[str] = set()
        for parent in parents.get(name, ()):
            found |= {parent} | visit(parent, (*trail, name))
        result[name] = found
        return found

    for name in parents:
        visit(name, ())
    return result


def _resolve_task_ref(
    ref: str,
    current: str,
    tasks: Mapping[str, Mapping[str, Any]],
    templates: Mapping[str, Mapping[str, Any]],
    ancestors: Mapping[str, set[str]],
) -> str | None:
    if ref == "tasks.name":
        return None
    parts = ref.split(".")
    other = parts[1]
    if other not in tasks:
        return f"no task named {other!r} in this DAG"
    if other not in ancestors.get(current, set()):
        return f"task {other!r} is not an upstream dependency of {current!r}"
    rest = parts[2:]
    if len(rest) == 1 and rest[0] in _TASK_FIELDS:
        return None
    if rest[:1] != ["outputs"] or len(rest) < 2:
        return "unknown task variable"
    if rest[1] == "result" and len(rest) == 2:
        return None
    if rest[1] not in ("parameters", "artifacts"):
        return "unknown task output"
    if len(rest) == 2:
        return None if rest[1] == "parameters" else "name the artifact"
    outputs = templates.get(tasks[other].get("template"), {}).get("outputs") or {}
    declared = {item["name"] for item in outputs.get(rest[1]) or []}
    wanted = ".".join(rest[2:])
    if wanted not in declared:
        return f"template of task {other!r} has no output {rest[1][:-1]} {wanted!r}"
    return None


def _check_task_arguments(
    task: Mapping[str, Any], target: Mapping[str, Any], path: str, problems: _Problems
) -> None:
    """Every input without a default is supplied; nothing is passed that the template lacks."""
    inputs = target.get("inputs") or {}
    arguments = task.get("arguments") or {}
    for group in ("parameters", "artifacts"):
        declared = {item["name"]: item for item in inputs.get(group) or []}
        passed = {item["name"] for item in arguments.get(group) or []}
        for name in sorted(passed - set(declared)):
            problems.add(
                f"{path}.arguments.{group}",
                f"{name!r} is not an input of template {target.get('name')!r}",
            )
        for name, item in declared.items():
            has_source = any(
                item.get(k) is not None
                for k in ("value", "default", "valueFrom", "from", "s3", "http", "raw", "git")
            )
            if name not in passed and not has_source and not item.get("optional"):
                problems.add(
                    f"{path}.arguments.{group}",
                    f"input {name!r} of template {target.get('name')!r} is not supplied",
                )


def _check_references(data: Any, resolve: Any, path: str, problems: _Problems) -> None:
    """Find every `{{...}}` in strings under `data` and resolve it with `resolve(name)`."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            _check_references(value, resolve, f"{path}.{key}", problems)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _check_references(value, resolve, f"{path}[{i}]", problems)
    elif isinstance(data, str):
        for match in _REFERENCE_RE.finditer(data):
            name = match.group(1)
            if name.startswith("="):
                continue  # expression templates are evaluated by expr-lang; not resolved here
            reason = resolve(name)
            if reason is not None:
                problems.add(path, f"{{{{{name}}}}}: {reason}")
