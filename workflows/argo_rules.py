"""Argo's rules for a rendered workflow spec, read in one place: `{{...}}` tags and what each may
name, names, DAG `depends`/`dependencies`, task order and cycles, task results, task arguments
against template inputs, workflow parameters, loops, `when`, Go durations and integers, retries
and their backoff, memoization, and what Argo refuses in one template.

The offline validator (`workflows/validate_resources.py`) reports every break of these rules; the
local runner (`workflows/local_runner/`) plans, orders and substitutes by them; nothing else reads
them again. Facts come from Argo Workflows v4.1.2: docs/variables.md (variables),
docs/enhanced-depends-logic.md (`depends`), docs/walk-through/dag.md (`dependencies`),
workflow/validate/validate.go (what it refuses), and the files each section cites.
"""

from __future__ import annotations

import graphlib
import json
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import yaml

from steps.contract import TAG_END, TAG_START, Text, given_value_problem
from workflows import retry_expression

# Results a `depends` term may test (docs/enhanced-depends-logic.md); the group results apply to
# tasks expanded by withItems/withParam/withSequence.
TASK_RESULTS = frozenset({"Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned"})
GROUP_RESULTS = frozenset({"AnySucceeded", "AllFailed"})
# "an unspecified result is equivalent to (task.Succeeded || task.Skipped || task.Daemoned)".
BARE_NAME_RESULTS = frozenset({"Succeeded", "Skipped", "Daemoned"})
DEPENDS_OPERATORS = frozenset({"&&", "||", "!"})

# Variables Argo defines for every workflow (docs/variables.md, "Global").
WORKFLOW_GLOBALS = frozenset(
    {
        "workflow.name", "workflow.namespace", "workflow.mainEntrypoint",
        "workflow.serviceAccountName", "workflow.uid", "workflow.parameters",
        "workflow.annotations", "workflow.labels", "workflow.creationTimestamp",
        "workflow.priority", "workflow.duration", "workflow.scheduledTime", "workflow.status",
        "workflow.failures",
    }
)  # fmt: skip
_WORKFLOW_PREFIXES = (
    "workflow.annotations.",
    "workflow.labels.",
    "workflow.creationTimestamp.",
    "workflow.outputs.parameters.",
    "workflow.outputs.artifacts.",
)
WORKFLOW_PARAMETER_PREFIX = "workflow.parameters."
# Variables of the template being run (container, script, resource templates).
_TEMPLATE_GLOBALS = frozenset({"pod.name", "node.name", "retries", "inputs.parameters"})
_TEMPLATE_PREFIXES = ("lastRetry.",)
# Per-task fields other than outputs that `tasks.<name>.` may name.
_TASK_FIELDS = frozenset(
    {"id", "ip", "status", "startedAt", "finishedAt", "exitCode", "hostNodeName"}
)
# Where an input may get its value when the calling task passes none.
_INPUT_SOURCES = ("value", "default", "valueFrom", "from", "s3", "http", "raw", "git")
# A `depends` operand is a task name (Argo's field name format) with an optional `.Result`.
_DEPENDS_TOKEN = re.compile(r"\s*(?:(&&|\|\||!|\(|\))|([A-Za-z0-9][-A-Za-z0-9]*)(?:\.(\w+))?)")


class ArgoRuleError(ValueError):
    """A rendered resource, or the parameters given to it, break one of Argo's rules."""


class MissingValue(ArgoRuleError):
    """`substitute` met a `{{name}}` it has no value for; `name` says which."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"{{{{{name}}}}} has no value")


@dataclass
class Problems:
    """Problems found so far, each `<JSON path>: <message>`."""

    items: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        """Record one problem at `path`."""
        self.items.append(f"{path}: {message}")


# --- text: `{{...}}` tags, references and values ---------------------------------------------


@dataclass(frozen=True)
class Tag:
    """One `{{...}}` of a text: where it stands and what is written between the braces."""

    start: int  # index of its `{{`
    end: int  # index just after its `}}`
    raw: str  # between the braces, as written

    @property
    def name(self) -> str:
        """What it names: the text trimmed of white space (simple_template.go, TrimSpace)."""
        return self.raw.strip()

    @property
    def expression(self) -> bool:
        """An expr-lang `{{=...}}`: `=` first, as written (util/template/kind.go, parseTag)."""
        return self.raw.startswith("=")


class UnclosedTag(ArgoRuleError):
    """A `{{` with no `}}` after it: Argo refuses the whole text."""


def tags(text: str) -> list[Tag]:
    """Every `{{...}}` tag of `text`, in order.

    Raises:
        UnclosedTag: a `{{` has no `}}` after it.
    """
    found, unclosed = _scan_tags(text)
    if unclosed is not None:
        raise UnclosedTag(
            f"{TAG_START!r} at {text[unclosed : unclosed + 40]!r} has no {TAG_END!r} after it "
            f"(Argo: Cannot find end tag={TAG_END!r})"
        )
    return found


def unclosed_tag(text: str) -> str | None:
    """Why Argo cannot read the tags of `text` (an unclosed `{{`), or None."""
    try:
        tags(text)
    except UnclosedTag as exc:
        return str(exc)
    return None


def references(text: str) -> list[str]:
    """The names of the `{{...}}` tags of `text` before any unclosed `{{`, in order (`=expr`
    ones included); `unclosed_tag` says whether there is one."""
    return [tag.name for tag in _scan_tags(text)[0]]


def _scan_tags(text: str) -> tuple[list[Tag], int | None]:
    """(the tags, the index of an unclosed `{{` or None): fasttemplate's reading."""
    found: list[Tag] = []
    position = 0
    while (start := text.find(TAG_START, position)) != -1:
        end = text.find(TAG_END, start + len(TAG_START))
        if end == -1:
            return found, start
        found.append(Tag(start, end + len(TAG_END), text[start + len(TAG_START) : end]))
        position = end + len(TAG_END)
    return found, None


def pure_reference(text: str) -> str | None:
    """The name when `text` is one `{{name}}` and nothing else (no expression), else None: what
    Argo v4.1.2 treats as "only a reference" to a value (workflow/controller/scope.go,
    absentOptionalRef; util/template/resolve_var.go, ResolveVar)."""
    if not (text.startswith(TAG_START) and text.endswith(TAG_END)) or len(text) < 4:
        return None
    raw = text[len(TAG_START) : -len(TAG_END)]
    if TAG_START in raw or TAG_END in raw or raw.startswith("="):
        return None
    return raw.strip()


def task_output(name: str) -> tuple[str, str, str] | None:
    """(task, group, output) when `name` is `tasks.<task>.outputs.<group>[.<output>]` (group
    `parameters`, `artifacts` or `result`; output "" when none is named), else None. Task names
    hold no `.` (FIELD_NAME), so the parts are the dotted ones (docs/variables.md, "DAG
    Templates")."""
    parts = name.split(".")
    if len(parts) < 4 or parts[0] != "tasks" or parts[2] != "outputs":
        return None
    return parts[1], parts[3], ".".join(parts[4:])


def artifact_from(text: Any) -> tuple[str, str] | None:
    """(task, output artifact) when `text` (an argument artifact's `from`) is only a reference
    to `{{tasks.<task>.outputs.artifacts.<name>}}`, else None."""
    name = pure_reference(text) if isinstance(text, str) else None
    output = task_output(name) if name else None
    if output is None or output[1] != "artifacts" or not output[2]:
        return None
    return output[0], output[2]


def strings(data: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """(JSON path, string) for every string anywhere under `data`."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from strings(value, f"{path}[{i}]")
    elif isinstance(data, str):
        yield path, data


def substitute(
    text: str,
    values: Mapping[str, str] | Callable[[str], str | None],
    keep_unknown: bool = False,
) -> str:
    """`text` with each `{{name}}` replaced by its value: `values[name]`, or `values(name)` (None:
    no value). With `keep_unknown` a tag without a value stays as written, as Argo leaves what a
    later scope fills (util/template/simple_template.go, simpleReplaceStrict).

    Raises:
        MissingValue: a name has no value (its `.name` says which), unless `keep_unknown`.
        UnclosedTag: a `{{` has no `}}` after it.
    """
    lookup = values if callable(values) else values.get
    parts: list[str] = []
    position = 0
    for tag in tags(text):
        value = lookup(tag.name)
        if value is None and not keep_unknown:
            raise MissingValue(tag.name)
        parts += [text[position : tag.start], text[tag.start : tag.end] if value is None else value]
        position = tag.end
    return "".join(parts) + text[position:]


def parameter_text(value: Any) -> str:
    """A parameter value as Argo passes it: a string; YAML booleans become `true`/`false`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- names ---------------------------------------------------------------------------------------
# Argo v4.1.2 workflow/validate/validate.go: workflowFieldNameFmt (templates, tasks, steps; at most
# workflowFieldMaxLength 128) and paramOrArtifactNameRegex (parameters, artifacts), checked with
# uniqueness by validateWorkflowFieldNames; the memoization key has the field names' form
# (workflow/controller/cache/cache.go, cacheKeyRegex). Kubernetes names: apimachinery
# validation IsDNS1123Label (63), IsDNS1123Subdomain (253), IsQualifiedName and IsValidLabelValue.
# Go's `$` ends the text only: fullmatch, never `re.match` with `$` (which allows a final "\n").

FIELD_NAME = "[a-zA-Z0-9][-a-zA-Z0-9]*"
FIELD_NAME_MAX = 128
PARAMETER_NAME = "[-a-zA-Z0-9_]+"
# An RFC 1123 label (Kubernetes apimachinery validation.IsDNS1123Label).
DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{DNS_LABEL}(\.{DNS_LABEL})*"
_LABEL_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"


# A Kubernetes namespace name, as a kind of value (steps/contract.py) for the settings that take
# one (PIPELINE_NAMESPACE); `is_dns_label` reads the same rule.
NAMESPACE = Text(
    DNS_LABEL,
    what="a Kubernetes namespace (an RFC 1123 label: at most 63 lowercase letters, digits and "
    "'-', starting and ending with a letter or digit)",
    empty_ok=False,
    max_length=63,
)


def is_dns_label(text: str) -> bool:
    """Whether `text` is an RFC 1123 label (a Kubernetes namespace name): at most 63 lowercase
    letters, digits and `-`, starting and ending with a letter or digit (`NAMESPACE`)."""
    try:
        NAMESPACE.parse(text)
    except ValueError:
        return False
    return True


def is_dns_subdomain(text: str, max_length: int | None = 253) -> bool:
    """Whether `text` is an RFC 1123 subdomain (most Kubernetes object names, a ConfigMap's):
    dot-separated labels, at most `max_length` characters (None: any); never `/` or `..`."""
    fits = max_length is None or len(text) <= max_length
    return bool(re.fullmatch(_DNS_SUBDOMAIN, text)) and fits


def is_label_name(text: str) -> bool:
    """Whether `text` is a label value, or the name part of a label key: at most 63 letters,
    digits, `-`, `_` and `.`, starting and ending with a letter or digit."""
    return bool(re.fullmatch(_LABEL_NAME, text)) and len(text) <= 63


def field_name_problem(name: str) -> str | None:
    """Why Argo refuses `name` for a template, task or step, or None."""
    if re.fullmatch(FIELD_NAME, name) and len(name) <= FIELD_NAME_MAX:
        return None
    return f"name {name!r} must match {FIELD_NAME} (<= {FIELD_NAME_MAX})"


def check_names(
    items: Any, what: str, path: str, problems: Problems, pattern: str = PARAMETER_NAME
) -> None:
    """Argo's validateWorkflowFieldNames over a list (parameters, artifacts; `pattern`
    FIELD_NAME for templates and tasks): each has a name of that form, none twice."""
    seen: set[str] = set()
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, Mapping):
            continue
        name = item.get("name")
        if name in (None, ""):
            problems.add(f"{path}[{i}].name", f"{what} needs a name")
            continue
        name = str(name)
        if pattern == FIELD_NAME:
            reason = field_name_problem(name)
        elif not re.fullmatch(pattern, name):
            reason = f"name {name!r} must match {pattern}"
        else:
            reason = None
        if reason:
            problems.add(f"{path}[{i}].name", f"{what} {reason}")
        elif name in seen:
            problems.add(f"{path}[{i}].name", f"{what} name {name!r} is not unique")
        seen.add(name)


# --- workflow parameters -----------------------------------------------------------------------


def unknown_parameters(known: Iterable[str], given: Iterable[str]) -> str | None:
    """Why `given` names parameters outside `known`, or None when it does not.

    This is the one wording of "unknown workflow parameter" (local runner, submit, one-off runs,
    CronWorkflow and Workflow arguments against their WorkflowTemplate). Each unknown name is
    quoted as Python writes it (`repr`), so white space in it shows: `-p ' model-name=m'`.
    """
    known = sorted(set(known))
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return None
    shown = ", ".join(repr(name) for name in unknown)
    return f"unknown workflow parameter(s) {shown}; known: {', '.join(known)}"


def check_parameter_names(known: Iterable[str], given: Iterable[str]) -> None:
    """Raise `ArgoRuleError` when `given` names a parameter outside `known`."""
    reason = unknown_parameters(known, given)
    if reason:
        raise ArgoRuleError(reason)


def outside_enum(name: str, value: Any, enum: Iterable[Any] | None) -> str | None:
    """Why `value` of parameter `name` is not one of its `enum`, or None (also for no enum)."""
    choices = [parameter_text(e) for e in enum or []]
    if not choices or parameter_text(value) in choices:
        return None
    return f"{name}={parameter_text(value)!r} not in {choices}"


def workflow_parameter_values(
    declared: Iterable[Mapping[str, Any]], given: Mapping[str, Any]
) -> dict[str, str]:
    """The value of every declared workflow parameter: `given` over the declared `value`.

    Args:
        declared: `spec.arguments.parameters` of the template (`name`, optional `value`, `enum`).
        given: overrides by name.

    Returns:
        name -> value as text, in declaration order.

    Raises:
        ArgoRuleError: a given name is not declared, a given value Argo would not pass on as
            written (`given_value_problem`), a value is outside its enum, or a parameter has no
            value at all.
    """
    declared = list(declared)
    check_parameter_names([p["name"] for p in declared], given)
    for name, value in given.items():
        problem = given_value_problem(name, value)
        if problem:
            raise ArgoRuleError(problem)
    # `value: null` is no value (Argo's Parameter.Value is a pointer, nil for null), never 'None'.
    values = {p["name"]: parameter_text(p["value"]) for p in declared if p.get("value") is not None}
    values.update({k: parameter_text(v) for k, v in given.items()})
    for param in declared:
        name = param["name"]
        if name not in values:
            raise ArgoRuleError(f"workflow parameter {name!r} has no value; pass it")
        reason = outside_enum(name, values[name], param.get("enum"))
        if reason:
            raise ArgoRuleError(f"workflow parameter {reason}")
    return {p["name"]: values[p["name"]] for p in declared}


# --- when -----------------------------------------------------------------------------------------
# Argo v4.1.2 evaluates a task's `when`, substituted, with govaluate (workflow/controller/steps.go,
# shouldExecute; github.com/Knetic/govaluate at 7625b7f, the version its go.mod pins: parsing.go
# and evaluationStage.go). Read here: `true`, `false`, or one comparison of two operands, each a
# number (`2024`, `-1`, `1.5`), `true`/`false`, a quoted string, or a word of letters, digits
# and `_` starting with a letter, which Argo turns into a string (so `x != none` needs no
# quotes). `==`/`!=` are govaluate's reflect.DeepEqual: `7 == '7'` is false (a number and a
# string); `<`, `<=`, `>`, `>=` compare two numbers or two strings. Anything else (`&&`, `||`,
# `!`, parentheses, arithmetic, `x.y`, a value with a space) is refused by name.

WHEN_COMPARATORS = ("==", "!=", "<=", ">=", "<", ">")
_WHEN_TOKEN = re.compile(r"""\s*('[^']*'|"[^"]*"|==|!=|<=|>=|<|>|[^\s'"<>=!]+)""")


@dataclass(frozen=True)
class When:
    """A `when`, read: one operand (a boolean), or two and the comparator between them."""

    text: str
    left: Any
    comparator: str | None = None
    right: Any = None

    def holds(self) -> bool:
        """Its value, as govaluate gives it.

        Raises:
            ArgoRuleError: not a boolean, or an order between a number and a string.
        """
        if self.comparator is None:
            if not isinstance(self.left, bool):
                raise ArgoRuleError(f"when {self.text!r} is not true or false")
            return self.left
        a, b = self.left, self.right
        if self.comparator in ("==", "!="):
            same = type(a) is type(b) and a == b
            return same if self.comparator == "==" else not same
        if not (type(a) is type(b) and isinstance(a, float | str)):
            raise ArgoRuleError(
                f"when {self.text!r}: {self.comparator} needs two numbers or two strings"
            )
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[self.comparator]


def read_when(text: str) -> When:
    """Read a substituted `when` (see above).

    Raises:
        ArgoRuleError: outside what is read here.
    """
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = _WHEN_TOKEN.match(text, position)
        if match is None:
            raise ArgoRuleError(f"unsupported when expression {text!r} at {text[position:]!r}")
        tokens.append(match.group(1))
        position = match.end()
    if len(tokens) == 1:
        return When(text, _when_operand(tokens[0], text))
    if len(tokens) != 3 or tokens[1] not in WHEN_COMPARATORS:
        raise ArgoRuleError(
            f"unsupported when expression {text!r}: true, false or one comparison `X op Y`"
        )
    return When(text, _when_operand(tokens[0], text), tokens[1], _when_operand(tokens[2], text))


def _when_operand(token: str, text: str) -> Any:
    if token[:1] in ("'", '"'):
        return token[1:-1]
    if token in ("true", "false"):
        return token == "true"
    if re.fullmatch(r"-?[0-9.]+", token):
        try:
            return float(token)
        except ValueError:
            pass
    elif re.fullmatch(r"[^\W\d_]\w*", token):
        return token
    raise ArgoRuleError(
        f"unsupported when expression {text!r}: {token!r} is not a number, true, false, a word "
        "or a quoted string (quote it)"
    )


# --- loops: withItems / withParam and their aggregated outputs ---------------------------------
# Sources (Argo v4.1.2): docs/walk-through/loops.md; workflow/controller/dag.go `expandTask`;
# workflow/controller/operator.go `processItem`, `generateNodeName`, `processAggregateNodeOutputs`
# and `aggregatedJSONValueList`; pkg/apis/workflow/v1alpha1/item.go (`Item.String`).

LOOP_FIELDS = ("withItems", "withParam", "withSequence")


def loop_field(task: Mapping[str, Any]) -> str | None:
    """Which of withItems/withParam/withSequence a DAG task loops with, or None."""
    present = [name for name in LOOP_FIELDS if task.get(name) not in (None, "", [])]
    return present[0] if present else None


def loop_items(task: Mapping[str, Any], with_param: str | None = None) -> list[Any]:
    """The items a looping task expands to: `withItems` as written, or `withParam` (its value
    after substitution, `with_param`) parsed as a JSON list.

    Raises:
        ArgoRuleError: withParam is not a JSON list (Argo: "withParam value could not be parsed
            as a JSON list"), or an item is not a string, number, bool, list or map.
    """
    if task.get("withItems") not in (None, []):
        items = list(task["withItems"])
    else:
        text = with_param if with_param is not None else str(task.get("withParam", ""))
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise ArgoRuleError(
                f"withParam value could not be parsed as a JSON list: {text.strip()!r}: {exc}"
            ) from None
        if not isinstance(items, list):
            raise ArgoRuleError(
                f"withParam value could not be parsed as a JSON list: {text.strip()!r}"
            )
    for index, item in enumerate(items):
        if item is None:
            raise ArgoRuleError(
                f"withItems[{index}] expected string, number, list, or map. received: null"
            )
    return items


def item_text(item: Any) -> str:
    """An item as `{{item}}` (or a map's value as `{{item.<key>}}`) becomes: a string as it is,
    anything else as compact JSON with map keys sorted (Go's json.Marshal, `Item.String`)."""
    if isinstance(item, str):
        return item
    return _go_json(item, escape_html=False)


def item_scope(item: Any) -> dict[str, str]:
    """The values `{{item}}` and, for a map, `{{item.<key>}}` take for one item."""
    scope = {"item": item_text(item)}
    if isinstance(item, Mapping):
        scope |= {f"item.{key}": item_text(value) for key, value in item.items()}
    return scope


def expanded_node_name(task: str, index: int, item: Any) -> str:
    """The node name Argo gives item `index` of a looping task: `task(index:desc)`, where desc
    is the item (a map's `key:value` pairs sorted and joined by commas), parentheses dropped."""
    if isinstance(item, Mapping):
        desc = ",".join(sorted(f"{k}:{item_text(v)}" for k, v in item.items()))
    else:
        desc = item_text(item)
    desc = desc.replace("(", "").replace(")", "")
    return f"{task}({index}:{desc})"


def aggregate_outputs(children: Sequence[Mapping[str, str] | None]) -> dict[str, str]:
    """What `tasks.<T>.outputs.parameters[.<name>]` of a looping task T is: `children` are its
    items' output parameters in loop order, None for an item that did not succeed (left out).

    `parameters` is a JSON list of one object (name -> value) per item; `parameters.<name>` a JSON
    list of that parameter's values, holding the values as JSON when every one of them is a JSON
    list or object, else as strings, compact as Go's json.Marshal writes it.
    """
    succeeded = [c for c in children if c is not None]
    per_name: dict[str, list[str]] = {}
    for outputs in succeeded:
        for name, value in outputs.items():
            per_name.setdefault(name, []).append(value)
    scope = {"parameters": _go_json([dict(c) for c in succeeded if c])}
    for name, values in per_name.items():
        scope[f"parameters.{name}"] = _go_json(_json_values_or_strings(values))
    return scope


def _json_values_or_strings(values: list[str]) -> list[Any]:
    """Argo's tryJSONUnmarshal (workflow/controller/operator.go): the values as Go's json.Unmarshal
    reads them into `any` if every one is a JSON list or object, else the strings themselves."""
    parsed = []
    for value in values:
        try:
            item = _go_unmarshal(value)
        except (ValueError, RecursionError):
            return list(values)
        if not isinstance(item, list | dict):
            return list(values)
        parsed.append(item)
    return parsed


def _go_unmarshal(text: str) -> Any:
    """`text` as Go's encoding/json Unmarshal reads it into `any`: every number a float64 (one
    beyond float64's range is an error, as is NaN or Infinity, which Python's json would take).

    Raises:
        ValueError: not JSON as Go reads it.
    """

    def number(digits: str) -> float:
        value = float(digits)
        if math.isinf(value):
            raise ValueError(f"number {digits} does not fit a float64")
        return value

    def constant(name: str) -> float:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_int=number, parse_float=number, parse_constant=constant)


def _go_json(value: Any, escape_html: bool = True) -> str:
    """`value` (None, bool, int, float, str, mappings and lists of them) as Go's encoding/json
    Marshal writes it (Go 1.26, which Argo v4.1.2 builds with: go.mod): compact, map keys sorted,
    float64s as `_go_float` writes them, strings as `_go_string`.

    Raises:
        ValueError: a NaN or infinite float (Go's UnsupportedValueError).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _go_string(value, escape_html)
    if isinstance(value, Mapping):
        pairs = (
            f"{_go_string(str(k), escape_html)}:{_go_json(value[k], escape_html)}"
            for k in sorted(value, key=str)
        )
        return "{" + ",".join(pairs) + "}"
    return "[" + ",".join(_go_json(v, escape_html) for v in value) + "]"


def _go_float(value: float) -> str:
    """A float64 as encoding/json writes it (floatEncoder): the shortest decimal that reads back
    the same, plain from 1e-6 to below 1e21 (`2` for 2.0, `12345678901234567000` for 1.2345...e19),
    else in exponent form with a one-digit negative exponent unpadded (`1e-7`, `1e+21`)."""
    if not math.isfinite(value):
        raise ValueError(f"json: unsupported value: {value}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if 1e-6 <= abs(value) < 1e21:
        return format(Decimal(repr(value)).normalize(), "f")
    return re.sub(r"e-0(\d)$", r"e-\1", repr(value))


# Characters Go's encoding/json always escapes beyond Python's json (U+2028, U+2029: "so that the
# JSON will be safe to embed inside HTML <script> tags"), and with HTML escaping on, `<`, `>`, `&`.
_GO_ALWAYS_ESCAPED = {"\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_HTML_ESCAPED = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _go_string(text: str, escape_html: bool) -> str:
    """A JSON string as Go writes it: Python's json escapes (`\\"`, `\\\\`, `\\b`, `\\f`, `\\n`,
    `\\r`, `\\t`, other controls as lower-case `\\u00xx`: the same as Go 1.22 and later), plus
    U+2028 and U+2029, plus `<`, `>`, `&` with `escape_html`; what is not valid Unicode (a lone
    surrogate) becomes U+FFFD, as Go replaces invalid UTF-8."""
    out = json.dumps(_LONE_SURROGATE.sub("\ufffd", text), ensure_ascii=False)
    escaped = _GO_ALWAYS_ESCAPED | (_GO_HTML_ESCAPED if escape_html else {})
    return "".join(escaped.get(c, c) for c in out)


# --- numbers and durations -----------------------------------------------------------------------
# Go's readings as Argo v4.1.2 applies them: strconv.Atoi (one optional sign, ASCII digits);
# time.ParseDuration (memoize.maxAge; a cron `@every`); ParseStringToDuration
# (pkg/apis/workflow/v1alpha1/utils.go: an integer is seconds, else a Go duration; retryStrategy
# backoff duration, maxDuration and cap, a template's timeout); util/intstr/parametrizable.go
# Int (an IntOrString: an int, or a string Atoi reads; retryStrategy limit, backoff factor).

_GO_DURATION_TERM = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
# Nanoseconds per unit: Go's time.Duration is an int64 of nanoseconds (time/format.go unitMap).
_GO_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6,
             "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}  # fmt: skip
_GO_INT64_LIMIT = 2**63  # time/format.go ParseDuration: `1<<63`


def go_integer(text: str) -> int | None:
    """`text` as Go's strconv.Atoi reads it (an int64), or None when it cannot."""
    if not re.fullmatch(r"[+-]?[0-9]+", text) or abs(value := int(text)) >= 2**63:
        return None
    return value


def go_duration_seconds(text: str, what: str = "maxAge") -> float:
    """Seconds in a Go duration as `time.ParseDuration` reads it: `180s`, `24h`, `1h30m`,
    `500ms`, `0` (no other bare number, no days, no spaces).

    Raises:
        ArgoRuleError: not a Go duration (Argo: "invalid maxAge"; `what` names the field).
    """
    invalid = ArgoRuleError(f"invalid {what}: time: invalid duration {text!r}")
    body = text[1:] if text[:1] in ("+", "-") else text
    negative = text.startswith("-")
    position, total = 0, 0
    while position < len(body):
        match = _GO_DURATION_TERM.match(body, position)
        if match is None:
            break
        whole, _, fraction = match.group(1).partition(".")
        unit = _GO_UNITS[match.group(2)]
        # Go's time/format.go ParseDuration (and leadingInt) count in uint64 nanoseconds and
        # refuse any term or sum past 1<<63 ("invalid duration"): 2562048h overflows an int64.
        value = int(whole or "0")
        if value > _GO_INT64_LIMIT or value > _GO_INT64_LIMIT // unit:
            raise invalid
        value *= unit
        digits, scale = _go_leading_fraction(fraction)
        if digits:
            value += int(float(digits) * (float(unit) / scale))
            if value > _GO_INT64_LIMIT:
                raise invalid
        total += value
        if total > _GO_INT64_LIMIT:
            raise invalid
        position = match.end()
    if body != "0" and (not body or position != len(body)):
        raise invalid
    if not negative and total > _GO_INT64_LIMIT - 1:
        raise invalid
    return (-total if negative else total) / 10**9


def _go_leading_fraction(digits: str) -> tuple[int, float]:
    """The digits after a duration's `.` as Go's time/format.go leadingFraction keeps them: it
    stops taking digits once one more would overflow (no error), and counts the scale of those
    it took."""
    value, scale = 0, 1.0
    for digit in digits:
        if value > (_GO_INT64_LIMIT - 1) // 10:
            break
        following = value * 10 + int(digit)
        if following > _GO_INT64_LIMIT:
            break
        value, scale = following, scale * 10
    return value, scale


def duration_seconds(text: str, what: str) -> float:
    """Seconds in a duration field as Argo reads it (ParseStringToDuration): an integer is
    seconds, anything else a Go duration (`30s`, `2m`, `1h30m`, `500ms`); a bare `1.5` is
    neither. `what` names the field in the error.

    Raises:
        ArgoRuleError: neither an integer nor a Go duration.
    """
    seconds = go_integer(text)
    if seconds is not None:
        return float(seconds)
    try:
        return go_duration_seconds(text, what)
    except ArgoRuleError:
        raise ArgoRuleError(f"invalid {what}: unable to parse {text!r} as a duration") from None


def int_or_string(value: Any, what: str) -> int:
    """An IntOrString field as Argo reads it (intstr.Int): an int, or a string Atoi reads.

    Raises:
        ArgoRuleError: anything else (Argo: "value '...' cannot be resolved to an int").
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = go_integer(value) if isinstance(value, str) else None
    if number is None:
        raise ArgoRuleError(f"invalid {what}: value {value!r} cannot be resolved to an int")
    return number


# --- memoize ------------------------------------------------------------------------------------
# Sources (Argo v4.1.2): docs/memoization.md; workflow/controller/cache/cache.go (the key's form,
# an entry's maxAge test) and configmap_cache.go (entries: JSON with nodeID, outputs,
# creationTimestamp, lastHitTimestamp); workflow/controller/operator.go, executeTemplate (a hit
# needs an entry with a node id, no older than maxAge; outputs are saved when the node succeeds).


def memo_key_problem(key: str) -> str | None:
    """Why Argo refuses `key` as a memoization cache key ("invalid cache key"), or None."""
    if re.fullmatch(FIELD_NAME, key):
        return None
    return f"invalid cache key: {key!r} (Argo's form: {FIELD_NAME})"


# --- DAG: depends, order, upstream -------------------------------------------------------------


@dataclass(frozen=True)
class DependsTerm:
    """One operand of `depends`: a task and the result it tests (None: a bare name)."""

    task: str
    result: str | None = None

    @property
    def results(self) -> frozenset[str]:
        """The task results that make this term true."""
        return BARE_NAME_RESULTS if self.result is None else frozenset({self.result})


@dataclass(frozen=True)
class Depends:
    """A task's `depends` (or legacy `dependencies`), read: its operands and operators."""

    text: str
    terms: tuple[DependsTerm, ...] = ()
    operators: frozenset[str] = frozenset()

    @property
    def tasks(self) -> set[str]:
        """Every task named."""
        return {term.task for term in self.terms}


def parse_depends(task: Mapping[str, Any]) -> Depends:
    """Read a DAG task's `depends` expression or `dependencies` list.

    `dependencies: [a, b]` is `a && b` with bare names (docs/walk-through/dag.md).

    Raises:
        ArgoRuleError: both fields are set (Argo's validate.go refuses that), a token is not an
            operator or `task[.Result]`, or a result is not one Argo defines.
    """
    depends, error = _scan_depends(task)
    if error:
        raise ArgoRuleError(error)
    return depends


def _scan_depends(task: Mapping[str, Any]) -> tuple[Depends, str | None]:
    """(what could be read, the first problem or None): a reader of a broken expression still
    learns the task names it mentions, so one typo does not hide every later check."""
    if task.get("depends") and task.get("dependencies"):
        error = "use either depends or dependencies, not both"
    elif not task.get("depends"):
        names = [str(name) for name in task.get("dependencies") or []]
        operators = frozenset({"&&"}) if len(names) > 1 else frozenset()
        return Depends(" && ".join(names), tuple(DependsTerm(n) for n in names), operators), None
    else:
        error = None
    text = str(task["depends"])
    terms: list[DependsTerm] = []
    operators: set[str] = set()
    tokens: list[str] = []  # each operator or parenthesis as written, each operand as "task"
    position = 0
    while position < len(text.rstrip()):
        match = _DEPENDS_TOKEN.match(text, position)
        if match is None:
            error = error or f"cannot read depends {text!r} at {text[position:].strip()!r}"
            next_space = text.find(" ", position + 1)
            position = next_space if next_space != -1 else len(text)
            continue
        operator, name, result = match.groups()
        if operator in DEPENDS_OPERATORS:
            operators.add(operator)
        elif name:
            if result is not None and result not in TASK_RESULTS | GROUP_RESULTS:
                error = error or (
                    f"depends {text!r}: {name}.{result} is not a task result; Argo has "
                    f"{', '.join(sorted(TASK_RESULTS | GROUP_RESULTS))}"
                )
            terms.append(DependsTerm(name, result))
        tokens.append(operator or "task")
        position = match.end()
    if not terms:
        error = error or f"depends {text!r} names no task"
    if error is None:
        error = _depends_grammar_problem(text, tokens)
    return Depends(text, tuple(terms), frozenset(operators)), error


def _depends_grammar_problem(text: str, tokens: Sequence[str]) -> str | None:
    """Why the tokens of `depends` do not form one boolean expression, or None.

    Argo evaluates `depends` as an expr-lang expression once every dependency has finished
    (v4.1.2 workflow/controller/dag.go, evaluateDependsLogic, `argoexpr.EvalBool`), after
    replacing each bare name by `(t.Succeeded || t.Skipped || t.Daemoned)`
    (workflow/common/ancestry.go); `argo lint` only collects the names (taskNameRegex). So `a b`,
    `a &&` or `(a` pass the lint and fail the DAG at run time: refused here up front. Grammar
    (docs/enhanced-depends-logic.md): `!` binds tightest, then `&&`, then `||`; parentheses group.
    """
    position = 0

    def expect_operand() -> None:
        nonlocal position
        while position < len(tokens) and tokens[position] == "!":
            position += 1
        if position == len(tokens):
            raise ValueError("it ends where a task was expected")
        token = tokens[position]
        position += 1
        if token == "(":
            expression()
            if position == len(tokens) or tokens[position] != ")":
                raise ValueError("a '(' is not closed")
            position += 1
        elif token != "task":
            raise ValueError(f"{token!r} stands where a task was expected")

    def expression() -> None:
        nonlocal position
        expect_operand()
        while position < len(tokens) and tokens[position] in ("&&", "||"):
            position += 1
            expect_operand()

    try:
        expression()
        if position != len(tokens):
            found = tokens[position]
            raise ValueError(
                "two tasks without && or || between them"
                if found in ("task", "(", "!")
                else f"an unmatched {found!r}"
            )
    except ValueError as exc:
        return f"depends {text!r} is not an expression Argo can evaluate: {exc}"
    return None


def dependency_order(parents: Mapping[str, Iterable[str]]) -> list[str]:
    """Task names in an order where every task comes after all its parents.

    Ties keep the order of `parents` (the DAG's listing order), so a chain runs as written.

    Raises:
        ArgoRuleError: the tasks form a cycle; the message lists it.
    """
    sorter = graphlib.TopologicalSorter({name: set(ps) for name, ps in parents.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib lists the cycle so that each task is a parent of the next.
        raise ArgoRuleError(f"dependency cycle: {' -> '.join(exc.args[1])}") from None
    listed = {name: i for i, name in enumerate(parents)}
    ready: list[str] = []
    order: list[str] = []
    while sorter.is_active():
        ready = sorted([*ready, *sorter.get_ready()], key=lambda n: listed.get(n, len(listed)))
        order.append(ready.pop(0))
        sorter.done(order[-1])
    return order


@dataclass(frozen=True)
class Dag:
    """A `dag` template, read: tasks by name, their depends, run order and upstream tasks."""

    tasks: dict[str, Mapping[str, Any]]
    depends: dict[str, Depends]
    order: list[str]
    upstream: dict[str, frozenset[str]]  # every task that finishes before this one starts


def read_dag(dag: Mapping[str, Any], path: str, problems: Problems) -> Dag:
    """Read `dag.tasks`; what Argo's validateDAG refuses goes to `problems`: no task, a name used
    twice, unreadable depends, unknown task names, cycles, and the DAG-wide rules of
    `_check_dag_wide`."""
    raw = [t for t in dag.get("tasks") or [] if isinstance(t, Mapping)]
    tasks = {str(t.get("name", "")): t for t in raw}
    if not raw:
        problems.add(f"{path}.tasks", "a dag must have at least one task")
    depends: dict[str, Depends] = {}
    parents: dict[str, set[str]] = {}
    check_names(raw, "task", f"{path}.tasks", problems, FIELD_NAME)
    for i, task in enumerate(raw):
        name = str(task.get("name", ""))
        depends[name], error = _scan_depends(task)
        if error:
            problems.add(f"{path}.tasks[{i}]", error)
        for missing in sorted(depends[name].tasks - set(tasks)):
            problems.add(
                f"{path}.tasks[{i}]", f"depends on {missing!r}, which is not a task of this DAG"
            )
        parents[name] = depends[name].tasks & set(tasks)
    _check_dag_wide(raw, tasks, depends, path, problems)
    try:
        order = dependency_order(parents)
    except ArgoRuleError as exc:
        problems.add(path, str(exc))
        order = list(tasks)
    return Dag(tasks, depends, order, {name: _reachable(name, parents) for name in tasks})


def _check_dag_wide(
    raw: Sequence[Mapping[str, Any]],
    tasks: Mapping[str, Mapping[str, Any]],
    depends: Mapping[str, Depends],
    path: str,
    problems: Problems,
) -> None:
    """The rules Argo's validateDAG applies across a DAG's tasks (v4.1.2
    workflow/validate/validate.go, validateDAG; docs/enhanced-depends-logic.md, "Compatibility"):
    `depends` in one task and `dependencies` in another; `continueOn` where the DAG uses
    `depends`; a task name starting with a digit where the DAG uses `depends`, or in a task with
    `dependencies`; `.AnySucceeded`/`.AllFailed` of a task that does not loop."""
    using_depends = any(task.get("depends") for task in raw)
    for i, task in enumerate(raw):
        name = str(task.get("name", ""))
        where = f"{path}.tasks[{i}]"
        if using_depends and task.get("dependencies"):
            problems.add(where, "cannot use both 'depends' and 'dependencies' in the same DAG")
        if using_depends and task.get("continueOn") is not None:
            problems.add(
                where,
                "cannot use 'continueOn' when the DAG uses 'depends'; "
                "depend on '<task>.Failed' / '<task>.Errored' instead",
            )
        if (using_depends or task.get("dependencies")) and name[:1].isdigit():
            problems.add(
                f"{where}.name",
                f"task name {name!r} cannot begin with a digit when using 'depends' or "
                "'dependencies'",
            )
        for term in depends[name].terms:
            other = tasks.get(term.task)
            if term.result in GROUP_RESULTS and other is not None and not loop_field(other):
                problems.add(
                    where,
                    f"depends on {term.task}.{term.result}, an items-based result, but task "
                    f"{term.task!r} has no withItems, withParam or withSequence",
                )


def _reachable(name: str, parents: Mapping[str, set[str]]) -> frozenset[str]:
    """Every task upstream of `name` (terminates on cycles too)."""
    seen: set[str] = set()
    todo = list(parents.get(name, ()))
    while todo:
        parent = todo.pop()
        if parent not in seen:
            seen.add(parent)
            todo.extend(parents.get(parent, ()))
    return frozenset(seen)


# --- the whole spec ------------------------------------------------------------------------------


@dataclass
class SpecReading:
    """A workflow spec read by Argo's rules: its templates, DAGs and every problem found."""

    parameters: list[Mapping[str, Any]]
    templates: dict[str, Mapping[str, Any]]
    dags: dict[str, Dag]
    problems: list[str]


def read_spec(spec: Mapping[str, Any], path: str = "$.spec") -> SpecReading:
    """Read a Workflow/WorkflowTemplate spec with templates (not a `workflowTemplateRef`).

    Checks, with the JSON path of each problem: workflow parameter defaults against their enum,
    the entrypoint, every `{{...}}` reference (the variable exists where it is used; a task output
    belongs to an upstream task and is declared by its template), DAG `depends` and cycles, task
    templates, and task arguments against the called template's inputs.

    Args:
        spec: `spec` of a rendered resource (or `spec.workflowSpec` of a CronWorkflow).
        path: JSON path of `spec`, prefixed to every problem.

    Returns:
        The reading; `problems` is empty when the spec keeps every rule read here.
    """
    problems = Problems()
    parameters = [p for p in (spec.get("arguments") or {}).get("parameters") or []]
    for i, param in enumerate(parameters):
        reason = outside_enum(param.get("name", ""), param.get("value"), param.get("enum"))
        if reason and param.get("value") is not None:
            problems.add(f"{path}.arguments.parameters[{i}].value", f"workflow parameter {reason}")
    templates = {t.get("name"): t for t in spec.get("templates") or [] if isinstance(t, Mapping)}
    check_names(spec.get("templates"), "template", f"{path}.templates", problems, FIELD_NAME)
    check_arguments(spec.get("arguments"), "workflow", f"{path}.arguments", problems)
    entrypoint = spec.get("entrypoint")
    if entrypoint is None or entrypoint not in templates:
        problems.add(f"{path}.entrypoint", f"{entrypoint!r} is not a template of this workflow")
    scope = _GlobalScope({str(p.get("name")) for p in parameters})
    dags: dict[str, Dag] = {}
    for i, template in enumerate(spec.get("templates") or []):
        if not isinstance(template, Mapping):
            continue
        tpath = f"{path}.templates[{i}]"
        _check_template(template, spec, tpath, problems)
        resolve = _template_scope(template, scope.resolve)
        for key, value in template.items():
            if key == "dag" and isinstance(value, Mapping):
                dags[template.get("name")] = _read_dag_template(
                    value, templates, resolve, f"{tpath}.dag", problems
                )
            else:
                _check_references(value, resolve, f"{tpath}.{key}", problems)
    for key, value in spec.items():
        if key != "templates":
            _check_references(value, scope.resolve, f"{path}.{key}", problems)
    return SpecReading(parameters, templates, dags, problems.items)


# --- one template: what Argo v4.1.2 refuses in it ------------------------------------------------
# workflow/validate/validate.go (validateInputs, validateLeaf, validateNonLeaf, validateOutputs,
# validateOutputParameter, validateArgumentsValues, validateTemplate's timeout, validateTemplate-
# Holder's retryPolicy; Artifact.CleanPath in pkg/apis/workflow/v1alpha1/workflow_types.go), and
# what its controller fails a node for once it runs, although the template says so already
# (workflow/controller/operator.go processNodeRetries: backoff and limit; executeTemplate:
# memoize; getTimeoutAsDeadline: timeout).

RETRY_POLICIES = ("Always", "OnError", "OnFailure", "OnTransientError")
_LEAF_KINDS = ("container", "containerSet", "script", "resource", "data", "http", "plugin")
_OUTPUT_SOURCES = ("path", "jqFilter", "jsonPath", "parameter", "expression", "supplied")
# Fields of an argument artifact that say nothing of where it comes from (HasLocationOrKey).
_NOT_ARTIFACT_SOURCES = frozenset({"name", "optional", "archive", "globalName", "artifactGC"})


def _check_template(
    template: Mapping[str, Any], spec: Mapping[str, Any], path: str, problems: Problems
) -> None:
    for kind in ("inputs", "outputs"):
        for group in ("parameters", "artifacts"):
            items = (template.get(kind) or {}).get(group)
            check_names(items, f"{kind[:-1]} {group[:-1]}", f"{path}.{kind}.{group}", problems)
    for j, param in enumerate((template.get("inputs") or {}).get("parameters") or []):
        reason = outside_enum(param.get("name", ""), param.get("default"), param.get("enum"))
        if reason and param.get("default") is not None:
            problems.add(f"{path}.inputs.parameters[{j}].default", f"input parameter {reason}")
    _check_memoize(template.get("memoize"), f"{path}.memoize", problems)
    _check_retry_strategy(template.get("retryStrategy"), f"{path}.retryStrategy", problems)
    expression = (template.get("retryStrategy") or {}).get("expression")
    if isinstance(expression, str) and expression and not references(expression):
        try:
            retry_expression.parse(expression)
        except retry_expression.ExpressionError as exc:  # fails whenever Argo evaluates it
            problems.add(
                f"{path}.retryStrategy.expression", f"template {template.get('name')}: {exc}"
            )
        except retry_expression.UnsupportedExpression:
            pass  # beyond the subset read here, not wrong: the local runner refuses it alone
    leaf = any(template.get(kind) is not None for kind in _LEAF_KINDS)
    if leaf:
        _check_leaf(template, spec, path, problems)
    elif template.get("dag") is not None or template.get("steps") is not None:
        for key in ("activeDeadlineSeconds", "timeout"):
            if template.get(key) is not None:
                problems.add(f"{path}.{key}", f"{key} is only valid for leaf templates")
    timeout = template.get("timeout")
    if leaf and isinstance(timeout, str) and timeout and not references(timeout):
        try:
            duration_seconds(timeout, "timeout")
            if go_integer(timeout) is not None:
                raise ArgoRuleError(f"invalid timeout: {timeout!r} has no unit (e.g. 30s)")
        except ArgoRuleError as exc:
            problems.add(f"{path}.timeout", str(exc))
    for j, param in enumerate((template.get("outputs") or {}).get("parameters") or []):
        reason = _output_parameter_problem(param, template)
        if reason:
            problems.add(f"{path}.outputs.parameters[{j}]", reason)


def _check_leaf(
    template: Mapping[str, Any], spec: Mapping[str, Any], path: str, problems: Problems
) -> None:
    """validateLeaf and CleanPath: an image, no mount path used twice, artifact paths that
    name one place without `..` leaving it; `parallelism` belongs to dag and steps templates."""
    if template.get("parallelism") is not None:
        problems.add(f"{path}.parallelism", "parallelism is only valid for steps and dag templates")
    deadline = template.get("activeDeadlineSeconds")
    if deadline is not None and not references(str(deadline)):
        seconds = deadline if isinstance(deadline, int) else go_integer(str(deadline))
        if seconds is None or seconds < 0:
            problems.add(
                f"{path}.activeDeadlineSeconds",
                f"activeDeadlineSeconds {deadline!r} must be a positive integer or a variable",
            )
    container = template.get("container")
    if isinstance(container, Mapping):
        defaults = (spec.get("templateDefaults") or {}).get("container") or {}
        if not container.get("image") and not defaults.get("image"):
            problems.add(f"{path}.container.image", "container.image may not be empty")
        # Mount points first, then input artifact paths: none may take a path taken before.
        places = [
            (f"container.volumeMounts[{j}].mountPath", m.get("mountPath"), "container.volumeMounts",
             m.get("name")) for j, m in enumerate(container.get("volumeMounts") or [])
        ] + [
            (f"inputs.artifacts[{j}].path", a.get("path"), "inputs.artifacts", a.get("name"))
            for j, a in enumerate((template.get("inputs") or {}).get("artifacts") or [])
        ]  # fmt: skip
        taken: dict[Any, str] = {}
        for field_path, place, group, name in places:
            if place in taken:
                problems.add(
                    f"{path}.{field_path}", f"path {place!r} already mounted in {taken[place]}"
                )
            taken[place] = f"{group}.{name}"
    for kind in ("container", "script"):
        if isinstance(template.get(kind), Mapping):
            for where, problem in container_problems(template[kind]):
                problems.add(
                    f"{path}.{kind}.{where}", f"template {template.get('name')}: {problem}"
                )
    for kind in ("inputs", "outputs"):
        for j, artifact in enumerate((template.get(kind) or {}).get("artifacts") or []):
            reason = artifact_path_problem(artifact.get("path"))
            if reason:
                problems.add(f"{path}.{kind}.artifacts[{j}].path", reason)


def artifact_path_problem(path: Any) -> str | None:
    """Why Argo refuses an artifact path of a leaf template (Artifact.CleanPath), or None: none
    given, or a `/..` that leaves the directory before it (`/work/a/../b` leaves `/work/a`)."""
    if not isinstance(path, str) or not path:
        return "the artifact did not specify a path"
    if "/../" in path:
        safe = path.split("/../", 1)[0]
    elif path.endswith("/.."):
        safe = path[:-3]
    else:
        return None
    cleaned = posixpath.normpath(path)
    if safe and (not cleaned.startswith(safe + "/") or len(cleaned) <= len(safe) + 1):
        return f"path {path!r} contains '..' leaving {safe!r}: directory traversal is not permitted"
    return None


def _output_parameter_problem(param: Mapping[str, Any], template: Mapping[str, Any]) -> str | None:
    """validateOutputParameter and validateOutputs: a value or one valueFrom source; a container
    or script template reads it from a path."""
    name = param.get("name")
    value_from = param.get("valueFrom")
    if value_from is not None and param.get("value") is not None:
        return f"output parameter {name!r} has both valueFrom and value specified, choose one"
    if param.get("value") is not None:
        return None
    if not isinstance(value_from, Mapping):
        return f"output parameter {name!r} does not have valueFrom or value specified"
    sources = [key for key in _OUTPUT_SOURCES if value_from.get(key) not in (None, "")]
    if len(sources) != 1:
        return (
            f"output parameter {name!r}: valueFrom needs exactly one of "
            f"{', '.join(_OUTPUT_SOURCES)}; it has {', '.join(sources) or 'none'}"
        )
    pod = any(template.get(kind) is not None for kind in ("container", "containerSet", "script"))
    if pod and sources != ["path"]:
        return f"output parameter {name!r}: valueFrom.path must be specified for this template"
    return None


def check_arguments(arguments: Any, what: str, path: str, problems: Problems) -> None:
    """Arguments of the workflow (`what` "workflow") or of a task ("argument"), as
    validateArguments reads them: names, an enum is not empty, and (a task's) each parameter
    has a value or valueFrom, each artifact a `from`, a location or a key."""
    if not isinstance(arguments, Mapping):
        return
    for group in ("parameters", "artifacts"):
        check_names(arguments.get(group), f"{what} {group[:-1]}", f"{path}.{group}", problems)
    for i, param in enumerate(arguments.get("parameters") or []):
        if not isinstance(param, Mapping):
            continue
        where = f"{path}.parameters[{i}]"
        if param.get("enum") == []:
            problems.add(f"{where}.enum", f"{param.get('name')!r}: enum holds no value")
        if what != "workflow" and param.get("value") is None and param.get("valueFrom") is None:
            problems.add(where, f"{param.get('name')!r}: value or valueFrom is required")
    for i, artifact in enumerate(arguments.get("artifacts") or []):
        if isinstance(artifact, Mapping) and not set(artifact) - _NOT_ARTIFACT_SOURCES:
            problems.add(
                f"{path}.artifacts[{i}]",
                f"{artifact.get('name')!r}: from, artifact location, or key is required",
            )


def _check_loop(task: Mapping[str, Any], path: str, problems: Problems) -> None:
    """addItemsToScope: one of withItems, withParam, withSequence; `{{item.<key>}}` in a task
    with withItems names a key its items hold (Argo's lint: any item; its run fails an item
    without it, so every item here)."""
    present = [name for name in LOOP_FIELDS if task.get(name) not in (None, "", [])]
    if len(present) > 1:
        problems.add(path, "only one of withItems, withParam, withSequence can be specified")
    items = task.get("withItems")
    if not isinstance(items, list) or not items or len(present) > 1:
        return
    scopes = [item_scope(item) if isinstance(item, Mapping) else {} for item in items]
    for where, text in strings({k: v for k, v in task.items() if k != "withItems"}, path):
        for name in references(text):
            lacking = [i for i, scope in enumerate(scopes) if name not in scope]
            if name.startswith("item.") and lacking:
                problems.add(where, f"{{{{{name}}}}}: item {lacking[0]} of withItems lacks it")


def _check_retry_strategy(retry: Any, path: str, problems: Problems) -> None:
    """A retry policy Argo knows; a literal limit, backoff duration, factor, cap and maxDuration
    Argo can read (it reads them only when the node fails, failing it then)."""
    if not isinstance(retry, Mapping):
        return
    policy = retry.get("retryPolicy")
    if policy not in (None, "", *RETRY_POLICIES):
        problems.add(f"{path}.retryPolicy", f"{policy!r} is not a valid RetryPolicy")
    limit = retry.get("limit")
    if limit is not None and not references(str(limit)):
        try:
            int_or_string(limit, "retryStrategy.limit")
        except ArgoRuleError as exc:
            problems.add(f"{path}.limit", str(exc))
    backoff = retry.get("backoff")
    if isinstance(backoff, Mapping) and not any(references(str(v)) for v in backoff.values()):
        try:
            read_backoff(backoff)
        except ArgoRuleError as exc:
            problems.add(f"{path}.backoff", str(exc))


@dataclass(frozen=True)
class Backoff:
    """A `retryStrategy.backoff`, read: seconds before the first retry, the factor, the cap of
    one wait and the bound of all attempts (None: not set)."""

    duration_s: float
    factor: int | None = None
    cap_s: float | None = None
    max_duration_s: float | None = None

    def wait_seconds(self, retry: int) -> float:
        """Seconds Argo waits before retry number `retry` (1: the first): duration *
        factor^(retry - 1) when the factor is above 0, at most the cap."""
        wait = self.duration_s
        if self.factor is not None and self.factor > 0:
            wait *= float(self.factor) ** (retry - 1)
        return wait if self.cap_s is None else min(wait, self.cap_s)


def read_backoff(backoff: Mapping[str, Any] | None) -> Backoff:
    """A `retryStrategy.backoff` as processNodeRetries reads it (no backoff: no wait).

    Raises:
        ArgoRuleError: no duration ("no base duration specified for retryStrategy"), or a field
            Argo cannot read.
    """
    if not backoff:
        return Backoff(0.0)
    if backoff.get("duration") in (None, ""):
        raise ArgoRuleError("no base duration specified for retryStrategy (backoff.duration)")
    factor = backoff.get("factor")
    cap, max_duration = backoff.get("cap"), backoff.get("maxDuration")
    return Backoff(
        duration_seconds(str(backoff["duration"]), "retryStrategy.backoff.duration"),
        None if factor is None else int_or_string(factor, "retryStrategy.backoff.factor"),
        None if cap in (None, "") else duration_seconds(str(cap), "retryStrategy.backoff.cap"),
        None
        if max_duration in (None, "")
        else duration_seconds(str(max_duration), "retryStrategy.backoff.maxDuration"),
    )


def _check_memoize(memoize: Any, path: str, problems: Problems) -> None:
    """A literal memoization key Argo would refuse, or a maxAge it cannot parse (Argo checks both
    only when the node runs, failing it then)."""
    if not isinstance(memoize, Mapping):
        return
    key, max_age = str(memoize.get("key", "")), str(memoize.get("maxAge", ""))
    if key and not references(key):
        reason = memo_key_problem(key)
        if reason:
            problems.add(f"{path}.key", reason)
    if not references(max_age):
        try:
            go_duration_seconds(max_age)
        except ArgoRuleError as exc:
            problems.add(f"{path}.maxAge", str(exc))


def add_global_parameter(outputs: list[dict[str, str]], name: str, value: str) -> None:
    """Record a task's output parameter with `globalName: name` in a workflow's outputs, as Argo
    does in `status.outputs.parameters`: a new name is appended, a known one gets the new value
    (v4.1.2 workflow/util/util.go, AddParamToGlobalScope)."""
    for param in outputs:
        if param["name"] == name:
            param["value"] = value
            return
    outputs.append({"name": name, "value": value})


def global_output_order(spec: Mapping[str, Any]) -> list[str]:
    """The `globalName`s of the entrypoint DAG's task outputs, in the order Argo appends them to
    `status.outputs.parameters` when every task runs (see `add_global_parameter`): tasks in the
    order they finish, each template's outputs in their listed order.

    Raises:
        ArgoRuleError: the spec has problems, or two tasks with global outputs may run at the same
            time (then the order is whichever finishes first, and no index is stable).
    """
    reading = read_spec(spec)
    if reading.problems:
        raise ArgoRuleError("; ".join(reading.problems))
    dag = reading.dags.get(spec.get("entrypoint"))
    if dag is None:
        raise ArgoRuleError(f"entrypoint {spec.get('entrypoint')!r} is not a dag template")
    names: list[str] = []
    with_globals: list[str] = []
    for task in dag.order:
        template = reading.templates.get(dag.tasks[task].get("template"), {})
        declared = [
            p["globalName"]
            for p in (template.get("outputs") or {}).get("parameters") or []
            if p.get("globalName")
        ]
        if not declared:
            continue
        concurrent = [t for t in with_globals if t not in dag.upstream[task]]
        if concurrent:
            raise ArgoRuleError(
                f"tasks {concurrent[0]!r} and {task!r} both export global outputs and may run at "
                "the same time: their order in status.outputs is not fixed"
            )
        with_globals.append(task)
        names.extend(n for n in declared if n not in names)
    return names


def check_workflow_arguments(
    arguments: Iterable[Mapping[str, Any]],
    declared: Iterable[Mapping[str, Any]],
    template_name: str,
    path: str,
    problems: Problems,
) -> None:
    """Arguments of a Workflow/CronWorkflow against the parameters its WorkflowTemplate declares."""
    declared_by_name = {p["name"]: p for p in declared}
    for i, param in enumerate(arguments):
        name = param.get("name", "")
        reason = unknown_parameters(declared_by_name, [name])
        if reason:
            problems.add(f"{path}[{i}]", f"{reason} (WorkflowTemplate {template_name!r})")
            continue
        if param.get("value") is None:
            continue
        reason = given_value_problem(name, param["value"])
        if reason:
            problems.add(f"{path}[{i}].value", reason)
            continue
        reason = outside_enum(name, param["value"], declared_by_name[name].get("enum"))
        if reason:
            problems.add(f"{path}[{i}].value", f"workflow parameter {reason}")


@dataclass
class _GlobalScope:
    parameters: set[str]

    def resolve(self, name: str) -> str | None:
        """None when `name` is a global variable Argo knows, else why not."""
        if name.startswith(WORKFLOW_PARAMETER_PREFIX):
            param = name[len(WORKFLOW_PARAMETER_PREFIX) :]
            if param in self.parameters:
                return None
            return f"workflow parameter {param!r} is not defined in spec.arguments.parameters"
        if name in WORKFLOW_GLOBALS or name.startswith(_WORKFLOW_PREFIXES):
            return None
        return "unknown variable"


def _template_scope(
    template: Mapping[str, Any], resolve_global: Callable[[str], str | None]
) -> Callable[[str], str | None]:
    """The resolver of names a template may use: its inputs and outputs, then the globals."""
    inputs = template.get("inputs") or {}
    outputs = template.get("outputs") or {}
    in_params = {p.get("name") for p in inputs.get("parameters") or []}
    in_artifacts = {a.get("name") for a in inputs.get("artifacts") or []}
    declared_outputs = {
        "parameters": {p.get("name") for p in outputs.get("parameters") or []},
        "artifacts": {a.get("name") for a in outputs.get("artifacts") or []},
    }

    def resolve(name: str) -> str | None:
        if name.startswith("inputs.parameters."):
            param = name[len("inputs.parameters.") :]
            return None if param in in_params else f"template has no input parameter {param!r}"
        if name.startswith("inputs.artifacts."):
            art, _, attr = name[len("inputs.artifacts.") :].partition(".")
            if art not in in_artifacts:
                return f"template has no input artifact {art!r}"
            return None if attr in ("", "path") else f"artifacts have no {attr!r} variable"
        if name.startswith(("outputs.parameters.", "outputs.artifacts.")):
            group, _, rest = name[len("outputs.") :].partition(".")
            item, _, attr = rest.partition(".")
            if item not in declared_outputs[group]:
                return f"template has no output {group[:-1]} {item!r}"
            return None if attr == "path" else "only .path of an output is defined here"
        if name in _TEMPLATE_GLOBALS or name.startswith(_TEMPLATE_PREFIXES):
            return None
        return resolve_global(name)

    return resolve


def _read_dag_template(
    dag: Mapping[str, Any],
    templates: Mapping[str, Mapping[str, Any]],
    resolve_template: Callable[[str], str | None],
    path: str,
    problems: Problems,
) -> Dag:
    read = read_dag(dag, path, problems)
    _check_references(
        {k: v for k, v in dag.items() if k != "tasks"}, resolve_template, path, problems
    )
    for i, task in enumerate(t for t in dag.get("tasks") or [] if isinstance(t, Mapping)):
        name = str(task.get("name", ""))
        tpath = f"{path}.tasks[{i}]"
        target = templates.get(task.get("template"))
        if task.get("template") is not None and target is None:
            problems.add(f"{tpath}.template", f"{task['template']!r} is not a template")
        looping = any(task.get(k) is not None for k in ("withItems", "withParam", "withSequence"))

        def resolve_task(ref: str, name: str = name, looping: bool = looping) -> str | None:
            if ref.startswith("tasks."):
                return _resolve_task_ref(ref, name, read, templates)
            if looping and (ref == "item" or ref.startswith("item.")):
                return None
            return resolve_template(ref)

        _check_references(task, resolve_task, tpath, problems)
        check_arguments(task.get("arguments"), "argument", f"{tpath}.arguments", problems)
        _check_loop(task, tpath, problems)
        if target is not None:
            _check_task_arguments(task, target, tpath, problems)
    return read


def _resolve_task_ref(
    ref: str, current: str, dag: Dag, templates: Mapping[str, Mapping[str, Any]]
) -> str | None:
    if ref == "tasks.name":
        return None
    parts = ref.split(".")
    other = parts[1]
    if other not in dag.tasks:
        return f"no task named {other!r} in this DAG"
    if other not in dag.upstream.get(current, frozenset()):
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
    outputs = templates.get(dag.tasks[other].get("template"), {}).get("outputs") or {}
    declared = {item.get("name") for item in outputs.get(rest[1]) or []}
    wanted = ".".join(rest[2:])
    if wanted not in declared:
        return f"template of task {other!r} has no output {rest[1][:-1]} {wanted!r}"
    return None


def _check_task_arguments(
    task: Mapping[str, Any], target: Mapping[str, Any], path: str, problems: Problems
) -> None:
    """Every input without a default is supplied; nothing is passed that the template lacks."""
    inputs = target.get("inputs") or {}
    arguments = task.get("arguments") or {}
    for group in ("parameters", "artifacts"):
        declared = {item.get("name"): item for item in inputs.get(group) or []}
        passed = {item.get("name") for item in arguments.get(group) or []}
        for name in sorted(passed - set(declared), key=str):
            problems.add(
                f"{path}.arguments.{group}",
                f"{name!r} is not an input of template {target.get('name')!r}",
            )
        for name, item in declared.items():
            has_source = any(item.get(k) is not None for k in _INPUT_SOURCES)
            if name not in passed and not has_source and not item.get("optional"):
                problems.add(
                    f"{path}.arguments.{group}",
                    f"input {name!r} of template {target.get('name')!r} is not supplied",
                )
        for j, item in enumerate(arguments.get(group) or []):
            enum = (declared.get(item.get("name")) or {}).get("enum")
            reason = outside_enum(item.get("name", ""), item.get("value"), enum)
            value = item.get("value")
            if reason and value is not None and not references(str(value)):
                problems.add(f"{path}.arguments.{group}[{j}].value", f"input parameter {reason}")


def _check_references(
    data: Any, resolve: Callable[[str], str | None], path: str, problems: Problems
) -> None:
    """Resolve every `{{...}}` in strings under `data`; expr-lang `{{=...}}` is not resolved. A
    text with an unclosed `{{` is refused whole, as Argo refuses it (util/template/validate.go)."""
    for where, text in strings(data, path):
        found, unclosed = _scan_tags(text)
        if unclosed is not None:
            problems.add(where, str(unclosed_tag(text)))
            continue
        for tag in found:
            if tag.expression:
                continue
            reason = resolve(tag.name)
            if reason is not None:
                problems.add(where, f"{{{{{tag.name}}}}}: {reason}")


# --- manifests: what Kubernetes takes from a file, and what a container can be given -----------
# A manifest reaches the apiserver as JSON (kubectl and the argo CLI convert YAML with
# sigs.k8s.io/yaml): a value JSON has no form for (YAML's `.inf`, `.nan`, `!!binary`, `!!set`)
# never arrives, Go's encoding/json failing "json: unsupported value: +Inf"; a mapping key written
# twice is refused by the apiserver's strict field validation, kubectl's default since Kubernetes
# 1.27 ("json: duplicate field"; docs: reference/using-api/api-concepts/#field-validation); a
# timestamp-looking scalar stays the string it is written as (sigs.k8s.io/yaml's go-yaml v2 fork
# decodes it into a string). The apiserver reads a request body of at most 3 MiB
# (k8s.io/apiserver pkg/server/config.go, MaxRequestBodyBytes), so no larger manifest can exist
# on a cluster; nor can one whose aliases expand past what an alias-free file of that size holds
# (go-yaml v2 refuses "excessive aliasing" for the same reason).

MAX_MANIFEST_BYTES = 3 * 1024 * 1024
# The most values a 3 MiB file can hold written out (`[0,0,0,...]`: two bytes each).
MAX_MANIFEST_VALUES = MAX_MANIFEST_BYTES // 2
GO_INT64_MIN, GO_INT64_MAX = -(2**63), 2**63 - 1


class _ManifestLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading a mapping's keys and its timestamps as Kubernetes does."""

    yaml_implicit_resolvers: ClassVar = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` adds keys that the mapping's own keys override
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict) or key in seen:
                what = "is not a scalar" if isinstance(key, list | dict) else "is given twice"
                raise yaml.constructor.ConstructorError(
                    None, None, f"mapping key {str(key)[:60]!r} {what}", key_node.start_mark
                )
            seen.add(key)
        mapping = super().construct_mapping(node, deep=deep)
        return {_json_key(k): v for k, v in mapping.items()}


def _json_key(key: Any) -> Any:
    """A scalar mapping key as sigs.k8s.io/yaml writes it into JSON: a string."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key) if isinstance(key, int) else key


def read_manifests(text: str) -> list[Any]:
    """The documents of a YAML (or JSON) manifest file as Kubernetes reads them: each empty one
    left out, timestamps as strings, scalar keys as strings.

    Raises:
        ArgoRuleError: not YAML, a key given twice in one mapping (naming it and its line),
            aliases that expand past MAX_MANIFEST_VALUES values or into themselves.
    """
    loader = _ManifestLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            _expanded_size(node, {})
            document = loader.construct_document(node)
            if document is not None:
                documents.append(document)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ArgoRuleError(f"{exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise ArgoRuleError(" ".join(str(exc).split())) from None
    finally:
        loader.dispose()
    return documents


def _expanded_size(node: yaml.Node, sizes: dict[int, int | None]) -> int:
    """How many values `node` stands for with every alias written out.

    Raises:
        ArgoRuleError: more than MAX_MANIFEST_VALUES, or an alias inside its own anchor.
    """
    if id(node) in sizes:
        size = sizes[id(node)]
        if size is None:
            raise ArgoRuleError(
                f"an alias refers to its own anchor (line {node.start_mark.line + 1})"
            )
        return size
    sizes[id(node)] = None
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1 + sum(_expanded_size(child, sizes) for child in children)
    if size > MAX_MANIFEST_VALUES:
        raise ArgoRuleError(
            f"its aliases expand to more than {MAX_MANIFEST_VALUES} values (line "
            f"{node.start_mark.line + 1}); no manifest of {MAX_MANIFEST_BYTES} bytes, the most "
            "Kubernetes reads, holds that many"
        )
    sizes[id(node)] = size
    return size


def json_value_problem(data: Any, path: str = "$") -> str | None:
    """`<JSON path>: <why>` for the first value of `data` JSON cannot hold, as a manifest's values
    travel to the apiserver (a NaN or infinite float, a value of another type than null, bool,
    number, string, list or string-keyed map), or None."""
    pending = [(path, data)]
    while pending:
        where, value = pending.pop()
        if value is None or isinstance(value, bool | int | str):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{where}: {value} is not a JSON number (json: unsupported value)"
            continue
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    return f"{where}: key {key!r} is not a string"
                pending.append((f"{where}.{key}", item))
        elif isinstance(value, list | tuple):
            pending.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
        else:
            return f"{where}: a {type(value).__name__} is not a JSON value"
    return None


def int64_problem(value: Any) -> str | None:
    """Why a field Go declares `int64` (a `parallelism`, v4.1.2 workflow_types.go) cannot hold
    `value`, or None: not a JSON integer (a bool, a string, a fraction), or outside int64."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{value!r} is not an integer"
    if not GO_INT64_MIN <= value <= GO_INT64_MAX:
        return f"{value} does not fit an int64 ({GO_INT64_MIN} to {GO_INT64_MAX})"
    return None


# An environment variable's name (Kubernetes apimachinery pkg/util/validation/validation.go,
# envVarNameFmt, read by IsEnvVarName when the apiserver validates a pod's container env: the
# pod Argo creates is refused, failing the node). Kubernetes 1.32+ may relax it behind the
# RelaxedEnvironmentVariableValidation gate (any printable ASCII but '='); the strict form is
# what every cluster accepts.
ENV_VAR_NAME = "[-._a-zA-Z][-._a-zA-Z0-9]*"


def env_var_name_problem(name: Any) -> str | None:
    """Why Kubernetes refuses `name` as a container's environment variable name, or None."""
    if isinstance(name, str) and re.fullmatch(ENV_VAR_NAME, name):
        return None
    return (
        f"env name {str(name)[:60]!r} is not an environment variable name (Kubernetes "
        f"IsEnvVarName: {ENV_VAR_NAME})"
    )


def c_string_problem(text: str) -> str | None:
    """Why `text` cannot be a program's argument, environment value or directory, or None: a NUL
    byte, which execve cannot pass (Go's syscall.BytePtrFromString refuses it with EINVAL, so
    the container runtime cannot start the container; Python's subprocess refuses it too)."""
    if "\0" in text:
        return f"{text[:60]!r} holds a NUL byte, which no program can be given"
    return None


def container_problems(
    container: Mapping[str, Any], fill: Callable[[str], str | None] = lambda text: text
) -> Iterator[tuple[str, str]]:
    """(field, why) for each value of a container the pod could not be started with: an env
    name Kubernetes refuses (`env_var_name_problem`; one holding a `{{...}}`, which Argo fills
    first, is left out), a NUL byte in its command, args, env values or workingDir
    (`c_string_problem`). `fill`: the value a text takes once substituted, None while unknown
    (default: as written)."""
    env = [e for e in container.get("env") or [] if isinstance(e, Mapping)]
    for j, item in enumerate(env):
        name = item.get("name")
        if not (isinstance(name, str) and references(name)):
            problem = env_var_name_problem(name)
            if problem:
                yield f"env[{j}].name", problem
    texts = [
        *((f"command[{j}]", c) for j, c in enumerate(container.get("command") or [])),
        *((f"args[{j}]", a) for j, a in enumerate(container.get("args") or [])),
        *((f"env[{j}].value", e.get("value")) for j, e in enumerate(env)),
        ("workingDir", container.get("workingDir")),
        ("image", container.get("image")),
    ]
    for where, text in texts:
        value = fill(text) if isinstance(text, str) else None
        problem = c_string_problem(value) if value is not None else None
        if problem:
            yield where, problem
