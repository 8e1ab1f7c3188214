"""Validate an object against a CustomResourceDefinition's openAPIV3Schema the way the API server
does with `kubectl apply` (field validation Strict, the default since Kubernetes 1.27): unknown
fields are errors, types, enums, patterns, bounds and required fields are checked.

The structural schema is turned into JSON Schema and checked with the `jsonschema` library:
- an object schema with `properties` and without `x-kubernetes-preserve-unknown-fields` gets
  `additionalProperties: false` (the API server prunes or, under Strict, rejects unknown fields);
- `nullable: true` admits null; `x-kubernetes-int-or-string` keeps its `anyOf` of integer/string;
- `x-kubernetes-embedded-resource` objects also admit apiVersion, kind and metadata.
CEL rules (`x-kubernetes-validations`) are evaluated by `cel_errors` with cel-python, `self` bound
to the value at the rule's node, as the API server does (same docs, "Validation rules").
Source of the rules: Kubernetes docs, "Extend the Kubernetes API with CustomResourceDefinitions",
sections "Specifying a structural schema", "Field pruning", "Validation" and "Validation rules".
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema

# OpenAPI keywords that mean the same in JSON Schema and are kept as they are.
_KEPT = {
    "type", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "minProperties",
    "maxProperties", "required", "multipleOf",
}  # fmt: skip


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for one node of a structural openAPIV3Schema."""
    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEPT}
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            out[key] = [to_json_schema(n) for n in node[key]]
    if node.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {})
        for key in ("apiVersion", "kind"):
            out["properties"].setdefault(key, {"type": "string"})
        out["properties"].setdefault("metadata", {"type": "object"})
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def cel_rule_count(node: Any) -> int:
    """How many CEL rules (`x-kubernetes-validations`) the schema has; they are not evaluated."""
    if isinstance(node, dict):
        return len(node.get("x-kubernetes-validations", [])) + sum(
            cel_rule_count(v) for v in node.values()
        )
    if isinstance(node, list):
        return sum(cel_rule_count(v) for v in node)
    return 0


def crd_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """One line per violation of `schema` (a CRD's openAPIV3Schema) by `obj`, with its JSON path."""
    validator = jsonschema.Draft202012Validator(to_json_schema(schema))
    return sorted(f"{error.json_path}: {error.message}" for error in _leaf_errors(validator, obj))


def _leaf_errors(validator: jsonschema.Draft202012Validator, obj: Any) -> Iterator[Any]:
    for error in validator.iter_errors(obj):
        # anyOf failures (int-or-string) carry their reasons as context; report the first one.
        yield error.context[0] if error.context else error


@functools.cache
def _cel_program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_errors(schema: dict[str, Any], obj: Any, path: str = "$") -> list[str]:
    """One line per CEL rule of `schema` that `obj` breaks (or that cannot be evaluated), with
    the JSON path of the value the rule was checked on and the rule's own message."""
    errors = []
    for validation in schema.get("x-kubernetes-validations", []):
        try:
            result = _cel_program(validation["rule"]).evaluate({"self": celpy.json_to_cel(obj)})
        except celpy.CELEvalError as exc:
            result = exc
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and result):
            reason = validation.get("message") or validation["rule"]
            errors.append(f"{path}: {reason} (rule: {validation['rule']}; got {result!r})")
    if isinstance(obj, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            child = properties.get(key, extra if isinstance(extra, dict) else None)
            if child is not None:
                errors += cel_errors(child, value, f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(obj):
            errors += cel_errors(schema["items"], value, f"{path}[{i}]")
    return errors
