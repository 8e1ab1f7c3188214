"""Strict offline checks of rendered Argo resources: fields, types, names, cron, and (through
`workflows/argo_rules.py`) references, DAG dependencies and arguments.

Hera's models ignore unknown keys and Argo's JSON schema lacks `additionalProperties: false`.
"""

from __future__ import annotations

import types
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

import pydantic
from hera.workflows import models as m

from workflows.argo_rules import (
    ArgoRuleError,
    Problems,
    check_arguments,
    check_workflow_arguments,
    go_duration_seconds,
    int64_problem,
    is_dns_label,
    is_dns_subdomain,
    is_label_name,
    json_value_problem,
    read_spec,
)

RESOURCE_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "WorkflowTemplate": m.WorkflowTemplate,
    "ClusterWorkflowTemplate": m.ClusterWorkflowTemplate,
    "CronWorkflow": m.CronWorkflow,
    "Workflow": m.Workflow,
}
API_VERSION = "argoproj.io/v1alpha1"
# Argo: "cron workflow name ... must not be more than 52 characters long" (it appends a suffix).
CRON_NAME_MAX = 52


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict"}


class ResourceValidationError(ValueError):
    """Rendered resources break Argo's rules; `problems` lists each one with its JSON path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems))


def validate_resources(resources: Iterable[Mapping[str, Any]]) -> list[str]:
    """Check rendered Argo resources together (a CronWorkflow may reference a WorkflowTemplate).

    Args:
        resources: plain dicts as `kubectl apply` would read them.

    Returns:
        One line per problem, each starting with the resource and JSON path; empty when valid.
    """
    resources = list(resources)
    problems = Problems()
    templates = {
        str(_metadata(r).get("name")): r
        for r in resources
        if r.get("kind") in ("WorkflowTemplate", "ClusterWorkflowTemplate")
    }
    for resource in resources:
        kind = resource.get("kind")
        label = f"{kind}/{_metadata(resource).get('name', '?')}"
        model = RESOURCE_MODELS.get(kind)  # type: ignore[arg-type]
        if model is None:
            problems.add(f"{label} $.kind", f"unsupported kind {kind!r}")
            continue
        not_json = json_value_problem(resource)
        if not_json:  # Kubernetes reads a manifest as JSON: nothing else can be checked
            problems.add(label, not_json)
            continue
        before = len(problems.items)
        _check_fields(model, resource, f"{label} $", problems)
        fields = problems.items[before:]
        del problems.items[before:]
        _check_types(model, resource, label, problems)
        # A value pydantic refuses is said once, in its words; the fields' check adds what it
        # takes (unknown keys; "3", 2.0 or 10**20 where Go reads an int64).
        typed = {item.split(": ", 1)[0] for item in problems.items[before:]}
        problems.items[before:before] = [i for i in fields if i.split(": ", 1)[0] not in typed]
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


def _metadata(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = resource.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def check_resources(resources: Iterable[Mapping[str, Any]]) -> None:
    """Raise `ResourceValidationError` listing every problem; return quietly when all is valid."""
    problems = validate_resources(resources)
    if problems:
        raise ResourceValidationError(problems)


# --- structure: unknown keys and types --------------------------------------------------------


def _check_fields(
    model: type[pydantic.BaseModel], data: Any, path: str, problems: Problems
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


def _check_value(annotation: Any, value: Any, path: str, problems: Problems) -> None:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        candidates = [a for a in get_args(annotation) if a is not type(None)]
        # A scalar reads as the member of its own type first: "3" of an IntOrString is a string.
        candidates.sort(key=lambda a: not (_plain_type(a) and isinstance(value, a)))
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
    elif annotation is int:
        # Argo's and Kubernetes' integers are Go int64s (or smaller) read from JSON: pydantic
        # would take "3", 2.0 or 10**20, which decoding into an int64 refuses.
        problem = int64_problem(value)
        if problem:
            problems.add(path, problem)


def _plain_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and not issubclass(annotation, pydantic.BaseModel)


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
    model: type[pydantic.BaseModel], data: Mapping[str, Any], label: str, problems: Problems
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


def _check_metadata(kind: str, metadata: Mapping[str, Any], label: str, problems: Problems) -> None:
    name = metadata.get("name")
    generate_name = metadata.get("generateName")
    path = f"{label} $.metadata"
    if name is None and generate_name is None:
        problems.add(path, "needs name or generateName")
    if name is not None:
        limit = CRON_NAME_MAX if kind == "CronWorkflow" else 253
        if not is_dns_subdomain(name, max_length=None):
            problems.add(f"{path}.name", f"{name!r} is not a valid RFC 1123 name")
        if len(name) > limit:
            problems.add(
                f"{path}.name", f"{name!r} is {len(name)} characters; {kind} allows {limit}"
            )
    prefix = None if generate_name is None else generate_name.rstrip("-") or "-"
    if prefix is not None and not is_dns_subdomain(prefix, max_length=None):
        problems.add(f"{path}.generateName", f"{generate_name!r} is not a valid RFC 1123 prefix")
    namespace = metadata.get("namespace")
    if namespace is not None and not is_dns_label(namespace):
        problems.add(f"{path}.namespace", f"{namespace!r} is not a valid RFC 1123 label")
    _check_labels(metadata.get("labels") or {}, f"{path}.labels", problems)


def _check_labels(labels: Mapping[str, str], path: str, problems: Problems) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and not is_dns_subdomain(prefix):
            problems.add(f"{path}.{key}", "label key prefix is not a DNS subdomain")
        if not is_label_name(name):
            problems.add(f"{path}.{key}", "label key name is not valid")
        if value and not is_label_name(value):
            problems.add(f"{path}.{key}", f"label value {value!r} is not valid")


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
        if not text.startswith("@every "):
            raise ValueError(f"unknown cron descriptor {text!r}")
        # robfig/cron v3 parseDescriptor reads what follows with Go's time.ParseDuration.
        try:
            go_duration_seconds(text[len("@every ") :], "@every duration")
        except ArgoRuleError as exc:
            raise ValueError(f"unknown cron descriptor {text!r}: {exc}") from None
        return None
    parts = text.split()
    if len(parts) != len(_CRON_FIELDS):
        raise ValueError(f"{expression!r} has {len(parts)} fields; cron needs 5")
    return [_parse_cron_field(part, *spec) for part, spec in zip(parts, _CRON_FIELDS, strict=True)]


@dataclass(frozen=True)
class CronSchedule:
    """A schedule as `parse_cron` reads it (Argo's cron library), as a kind of value
    (steps/contract.py) for the settings that take one (PIPELINE_SCHEDULE)."""

    empty_ok: bool = False

    def parse(self, text: str) -> str:
        """`text`; ValueError `bad cron expression: <the field and part that do not parse>`."""
        try:
            parse_cron(text)
        except ValueError as exc:
            raise ValueError(f"bad cron expression: {exc}") from None
        return text

    def describe(self) -> str:
        """What the kind accepts."""
        return "a cron schedule (5 fields, or @weekly, @every 1h, ...)"


@dataclass(frozen=True)
class TimeZone:
    """An IANA time zone name Python's zoneinfo knows, as a kind of value (steps/contract.py)
    for the settings that take one (PIPELINE_TIMEZONE)."""

    empty_ok: bool = False

    def parse(self, text: str) -> str:
        """`text`; ValueError `unknown IANA time zone '<text>'`, also for a name zoneinfo cannot
        look up at all (`America`, a directory of zones; `../x`; a NUL byte)."""
        try:
            zoneinfo.ZoneInfo(text)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown IANA time zone {text[:60]!r}") from None
        return text

    def describe(self) -> str:
        """What the kind accepts."""
        return "an IANA time zone (UTC, Europe/Berlin, ...)"


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


def _check_cron(spec: Mapping[str, Any], label: str, problems: Problems) -> None:
    path = f"{label} $.spec"
    schedules = spec.get("schedules") or []
    if not schedules:
        problems.add(f"{path}.schedules", "needs at least one schedule")
    for i, schedule in enumerate(schedules):
        try:
            CronSchedule().parse(schedule)
        except ValueError as exc:
            problems.add(f"{path}.schedules[{i}]", str(exc))
    timezone = spec.get("timezone")
    if timezone:
        try:
            TimeZone().parse(timezone)
        except ValueError as exc:
            problems.add(f"{path}.timezone", str(exc))
    policy = spec.get("concurrencyPolicy")
    if policy is not None and policy not in ("Allow", "Forbid", "Replace"):
        problems.add(f"{path}.concurrencyPolicy", f"{policy!r} is not Allow, Forbid or Replace")
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        if spec.get(key) is not None and spec[key] < 0:
            problems.add(f"{path}.{key}", "must not be negative")


# --- workflow spec: templates, DAGs and {{...}} references ---------------------------------------


def _check_workflow_spec(
    spec: Mapping[str, Any],
    known_templates: Mapping[str | None, Mapping[str, Any]],
    path: str,
    problems: Problems,
) -> None:
    ref = spec.get("workflowTemplateRef")
    if ref is not None:
        check_arguments(spec.get("arguments"), "workflow", f"{path}.arguments", problems)
        referenced = known_templates.get(str(ref.get("name")))
        if referenced is None:
            return  # the template lives on the cluster; nothing more to resolve offline
        check_workflow_arguments(
            (spec.get("arguments") or {}).get("parameters") or [],
            (referenced.get("spec", {}).get("arguments") or {}).get("parameters") or [],
            ref.get("name"),
            f"{path}.arguments.parameters",
            problems,
        )
        return

    reading = read_spec(spec, path)
    problems.items.extend(reading.problems)
    spec_volumes = {v["name"] for v in spec.get("volumes") or []}
    spec_volumes |= {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
    for i, template in enumerate(spec.get("templates") or []):
        _check_volume_mounts(template, spec_volumes, f"{path}.templates[{i}]", problems)


def _check_volume_mounts(
    template: Mapping[str, Any], spec_volumes: set[str], path: str, problems: Problems
) -> None:
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
