"""Substitution for a local run: the values each `{{...}}` takes, and where container paths under
/work live on this machine.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflows.argo_rules import (
    ArgoRuleError,
    MissingValue,
    aggregate_outputs,
    artifact_from,
    expanded_node_name,
    go_duration_seconds,
    loop_items,
    memo_key_problem,
    outside_enum,
    parameter_text,
    pure_reference,
    substitute,
)
from workflows.local_runner.planning import (
    CONTAINER_ROOT,
    LocalRunError,
    PlannedTask,
    under_work,
)
from workflows.local_runner.run_record import TaskResult

# `/work` as a path of its own in the template's text, not inside a longer name.
_WORK_PATH = re.compile(r"(?<![\w./-])/work(?![\w.-])")


def fill(text: Any, scope: Mapping[str, str], where: str) -> str:
    """`text` with its `{{...}}` replaced from `scope`.

    Raises:
        LocalRunError: a name has no value yet (e.g. the output of a task that was skipped).
    """
    try:
        return substitute(parameter_text(text), scope)
    except MissingValue as exc:
        raise LocalRunError(
            f"{where}: {{{{{exc.name}}}}} has no value (did its task run?)"
        ) from None


def known(text: Any, scope: Mapping[str, str]) -> str | None:
    """`text` with its `{{...}}` replaced from `scope`, or None when one has no value there."""
    try:
        return substitute(parameter_text(text), scope)
    except MissingValue:
        return None


def host_path(work: Path, container_path: str) -> Path:
    """The file on this machine behind `container_path` (under /work) for a task's work dir."""
    if not under_work(container_path):
        raise LocalRunError(f"path {container_path} is outside {CONTAINER_ROOT}")
    relative = posixpath.normpath(container_path)[len(CONTAINER_ROOT) :].lstrip("/")
    return work / relative


@dataclass(frozen=True)
class ContainerPaths:
    """How /work appears to one task: its host work dir (process) or a mount (docker)."""

    work: Path
    mapped: bool  # True: /work in the template's text becomes `work` (process backend)

    def local(self, text: str) -> str:
        """The template's own text with /work mapped; parameter values are never rewritten."""
        return _WORK_PATH.sub(str(self.work), text) if self.mapped else text


class DagScope(dict):
    """`dag_scope`'s values, plus `absent`: the outputs of skipped or omitted tasks that declare
    no default (Argo's "absent optional", v4.1.2 workflow/controller/scope.go)."""

    absent: frozenset[str] = frozenset()


def dag_scope(
    workflow: Mapping[str, str],
    results: Mapping[str, TaskResult],
    templates: Mapping[str, Mapping[str, Any]] | None = None,
) -> DagScope:
    """What a DAG task's `when` and arguments may name: workflow variables and task outputs; a
    looping task's outputs are its items' aggregated as Argo does (`argo_rules.aggregate_outputs`).

    A task that was Skipped or Omitted (never ran) has, for each output parameter its template
    (`templates[task]`) declares, that output's `valueFrom.default`, else an absent value (in
    `absent`): a task argument that is only a reference to one is not supplied, so the input's
    own default applies (`container_scope`); anything else naming it fails. Argo v4.1.2:
    workflow/controller/scope.go (addSkippedNodeOutputsToScope, markAbsentOptionalArgs),
    dag.go resolveDependencyReferences, docs/enhanced-depends-logic.md.
    """
    scope = DagScope(workflow)
    absent: set[str] = set()
    for task, result in results.items():
        if result.phase in ("Skipped", "Omitted") and result.children is None:
            declared = ((templates or {}).get(task) or {}).get("outputs") or {}
            for p in declared.get("parameters") or []:
                key = f"tasks.{task}.outputs.parameters.{p['name']}"
                default = (p.get("valueFrom") or {}).get("default")
                if default is not None:
                    scope[key] = parameter_text(default)
                else:
                    absent.add(key)
            continue
        if result.children is not None:
            if not result.children:
                continue  # no items: Argo sets none of the aggregated outputs

            items = [
                c.parameters if c.phase == "Succeeded" else None for c in result.children.values()
            ]
            outputs = aggregate_outputs(items)
            scope |= {f"tasks.{task}.outputs.{k}": v for k, v in outputs.items()}
        else:
            scope |= {
                f"tasks.{task}.outputs.parameters.{k}": v for k, v in result.parameters.items()
            }
    scope.absent = frozenset(absent)
    return scope


def with_items(data: Any, values: Mapping[str, str]) -> Any:
    """`data` (a DAG task's spec) with every `{{item}}`/`{{item.<key>}}` replaced by `values`,
    other references left for later, as Argo expands a looping task before it runs it.

    Raises:
        LocalRunError: `{{item.<key>}}` names a key the item lacks.
    """
    if isinstance(data, Mapping):
        return {k: with_items(v, values) for k, v in data.items()}
    if isinstance(data, list):
        return [with_items(v, values) for v in data]
    if isinstance(data, str):

        def item_value(name: str) -> str | None:
            if name == "item" or name.startswith("item."):
                if name not in values:
                    raise LocalRunError(f"{{{{{name}}}}}: the item has no such key")
                return values[name]
            return None  # filled later, from the task's scope

        return substitute(data, item_value, keep_unknown=True)
    return data


def loop_nodes(
    task: PlannedTask, scope: Mapping[str, str], known_only: bool = False
) -> list[tuple[str, Any]] | None:
    """(node name, item) of each item of a looping task, as Argo names them: withItems as
    written, withParam filled from the DAG's `scope`. `known_only`: None when withParam names a
    value `scope` does not hold yet (a task's output, before the run).

    Raises:
        ArgoRuleError: withParam is not a JSON list of items.
        LocalRunError: withParam names a value `scope` lacks.
    """
    param = None
    if task.loop == "withParam":
        param = known(task.spec.get("withParam", ""), scope)
        if param is None and known_only:
            return None
        param = param if param is not None else fill(task.spec["withParam"], scope, "withParam")
    items = loop_items(task.spec, param)
    return [(expanded_node_name(task.name, i, item), item) for i, item in enumerate(items)]


def memoization(
    tpl: Mapping[str, Any], scope: Mapping[str, str], where: str, known_only: bool = False
) -> tuple[str | None, str, float | None] | None:
    """(key, ConfigMap name, maxAge in seconds) of a memoized template, else None; each checked
    as Argo checks it when the node runs. `known_only`: a key or age `scope` cannot fill yet is
    None instead of an error.

    Raises:
        LocalRunError: a key Argo refuses, an age that is no Go duration, a value `scope` lacks.
    """
    memoize = tpl.get("memoize")
    if not memoize:
        return None
    key, age = (
        (known(memoize["key"], scope), known(memoize["maxAge"], scope))
        if known_only
        else (fill(memoize["key"], scope, where), fill(memoize["maxAge"], scope, where))
    )
    problem = memo_key_problem(key) if key is not None else None
    if problem:
        raise LocalRunError(f"{where}: memoize: {problem}")
    try:
        max_age = go_duration_seconds(age) if age is not None else None
    except ArgoRuleError as exc:
        raise LocalRunError(f"{where}: memoize: {exc}") from None
    return key, memoize["cache"]["configMap"]["name"], max_age


def container_scope(
    task: PlannedTask,
    spec: Mapping[str, Any],
    workflow: Mapping[str, str],
    dag: Mapping[str, str],
    paths: ContainerPaths,
    known_only: bool = False,
) -> dict[str, str]:
    """What the called template may name: workflow variables, its inputs' values and paths,
    and its outputs' paths; `spec` is the task (one item of it, for a loop). For a dag template,
    its input parameters (what its own tasks may name besides their outputs). `known_only`: an
    input whose value `dag` cannot fill yet (a task's output, before the run) is left out.

    Raises:
        LocalRunError: an input parameter without a value or outside its enum.
    """
    where = f"task {task.name}"
    tpl = task.template
    scope = dict(workflow)
    arguments = spec.get("arguments") or {}
    given = {  # `value: null` gives no value (as Argo reads it), never the text 'None'
        p["name"]: parameter_text(p["value"])
        for p in arguments.get("parameters") or []
        if p.get("value") is not None
    }
    absent = getattr(dag, "absent", frozenset())
    for p in (tpl.get("inputs") or {}).get("parameters") or []:
        value = given.get(p["name"])
        unsupplied = value is not None and pure_reference(value) in absent
        if value is None or unsupplied:
            value = p.get("default", p.get("value"))
        if value is None:
            why = f": {given[p['name']]} names a task that did not run" if unsupplied else ""
            raise LocalRunError(f"{where}: input parameter {p['name']} has no value{why}")
        try:
            value = fill(value, dag, where)
        except LocalRunError:
            if known_only:
                continue
            raise
        reason = outside_enum(p["name"], value, p.get("enum"))
        if reason:
            raise LocalRunError(f"{where}: input parameter {reason}")
        scope[f"inputs.parameters.{p['name']}"] = value
    for a in (tpl.get("inputs") or {}).get("artifacts") or []:
        scope[f"inputs.artifacts.{a['name']}.path"] = paths.local(a["path"])
    for p in (tpl.get("outputs") or {}).get("parameters") or []:
        scope[f"outputs.parameters.{p['name']}.path"] = paths.local(p["valueFrom"]["path"])
    for a in (tpl.get("outputs") or {}).get("artifacts") or []:
        scope[f"outputs.artifacts.{a['name']}.path"] = paths.local(a["path"])
    return scope


@dataclass(frozen=True)
class ArtifactSource:
    """Where an input artifact comes from: another task's output, or a key in the repository."""

    task: str | None = None
    output: str | None = None
    key: str | None = None  # a key-only artifact (substituted)


def artifact_sources(
    task: PlannedTask, spec: Mapping[str, Any], scope: Mapping[str, str]
) -> dict[str, ArtifactSource]:
    """Input artifact name -> its source: the task's `arguments.artifacts` (`from` a task, or a
    key-only `s3.key`), else the template's own key-only `s3.key`; `scope` fills the keys."""
    where = f"task {task.name}"
    sources = {}
    for a in (task.template.get("inputs") or {}).get("artifacts") or []:
        if (a.get("s3") or {}).get("key"):
            sources[a["name"]] = ArtifactSource(key=fill(a["s3"]["key"], scope, where))
    for a in (spec.get("arguments") or {}).get("artifacts") or []:
        produced = artifact_from(a.get("from"))
        if produced:
            sources[a["name"]] = ArtifactSource(task=produced[0], output=produced[1])
        elif (a.get("s3") or {}).get("key"):
            sources[a["name"]] = ArtifactSource(key=fill(a["s3"]["key"], scope, where))
    return sources
