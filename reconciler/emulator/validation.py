"""The service's own checks and defaults on incoming bodies, as API.md describes them.

Written independently of ``reconciler.rules`` on purpose: the emulator is the other side of the
wire, and sharing code with the client would hide exactly the disagreements it exists to catch.
Each function returns the stored body (known fields only, defaults applied) or raises
``Invalid`` naming the field.
"""

from __future__ import annotations

import math
import re
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
PROPERTY_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
FUNCTION_FIELDS = ("id", "name", "description", "timeoutMillis", "parameters", "labels")
PROMPT_FIELDS = (
    "name",
    "version",
    "template",
    "variables",
    "contextRules",
    "modelId",
    "maxTokens",
    "functions",
    "contextPolicyId",
    "variants",
    "labels",
)
POLICY_FIELDS = (
    "id",
    "model_id",
    "token_limit_matrix",
    "memory_retention_directives",
    "pii_masking",
    "metadata_fields",
    "attribute_mappings",
    "flow_id",
    "format",
    "labels",
)
_EXPRESSION = re.compile(r"\{\{-?\s*([A-Za-z_][A-Za-z0-9_]*)")
_BOUND = re.compile(r"\{%-?\s*(?:for\s+([A-Za-z_]\w*)(?:\s*,\s*([A-Za-z_]\w*))?\s+in|set\s+([A-Za-z_]\w*))")


class Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def _known(body: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    # Unknown fields are ignored, not stored (API.md): a client typo is silently lost here.
    return {k: body[k] for k in fields if k in body}


def _labels(body: dict[str, Any]) -> None:
    labels = body.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise Invalid("labels", "labels must map strings to strings")


def _string_defaults(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_string_defaults(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _string_defaults(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _string_defaults(out["items"])
    if out.get("type") == "string" and "maxLength" not in out:
        out["maxLength"] = 255
    return out


def _depth(schema: Any) -> int:
    if not isinstance(schema, dict):
        return 0
    # Objects count; an array is transparent (an array of objects is one level, like an object).
    inner = [_depth(p) for p in (schema.get("properties") or {}).values()]
    if isinstance(schema.get("items"), dict):
        inner.append(_depth(schema["items"]))
    own = 1 if schema.get("type") == "object" else 0
    return own + max(inner, default=0)


def function_definition(resource_id: str, body: dict[str, Any]) -> dict[str, Any]:
    if not ID_PATTERN.match(resource_id):
        raise Invalid("id", "id must match ^[a-z0-9][a-z0-9-]{0,63}$")
    if "id" in body and body["id"] != resource_id:
        raise Invalid("id", "the body's id differs from the path's")
    out = _known(body, FUNCTION_FIELDS)
    for name in ("name", "description"):
        if not isinstance(out.get(name), str) or not out[name]:
            raise Invalid(name, f"{name} is required")
    timeout = out.get("timeoutMillis")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 60000:
        raise Invalid("timeoutMillis", "timeoutMillis must be an integer in 1..60000")
    params = out.get("parameters")
    if not isinstance(params, dict):
        raise Invalid("parameters", "parameters must be a JSON Schema object")
    try:
        Draft7Validator.check_schema(params)
    except SchemaError as exc:
        raise Invalid("parameters", f"invalid JSON Schema: {exc.message}") from None
    if params.get("type") != "object":
        raise Invalid("parameters.type", "parameters must be of type object")
    props = params.get("properties") or {}
    if len(props) > 10:
        raise Invalid("parameters.properties", "at most 10 properties")
    for name, prop in props.items():
        if not isinstance(prop, dict) or prop.get("type") not in PROPERTY_TYPES:
            raise Invalid(f"parameters.properties.{name}.type", "unsupported property type")
    if _depth(params) > 3:
        raise Invalid("parameters", "object nesting deeper than 3 levels")
    _labels(out)
    out["id"] = resource_id
    out["parameters"] = _string_defaults(params)
    out.setdefault("labels", {})
    return out


def template_names(template: str) -> set[str]:
    bound = {name for groups in _BOUND.findall(template) for name in groups if name}
    return {name for name in _EXPRESSION.findall(template)} - bound - {"loop", "true", "false", "none"}


def prompt(body: dict[str, Any], models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = _known(body, PROMPT_FIELDS)
    if not isinstance(out.get("name"), str) or not out["name"]:
        raise Invalid("name", "name is required")
    for name in ("version", "template", "modelId"):
        if not isinstance(out.get(name), str):
            raise Invalid(name, f"{name} is required")
    max_tokens = out.get("maxTokens")
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        raise Invalid("maxTokens", "maxTokens must be a positive integer")
    if out["modelId"] not in models:
        raise Invalid("modelId", f"unknown model {out['modelId']}")
    variables = out.setdefault("variables", [])
    if not isinstance(variables, list) or not all(isinstance(v, dict) and "name" in v for v in variables):
        raise Invalid("variables", "variables must be a list of {name, type, required}")
    declared = {v["name"] for v in variables}
    rules = out.setdefault("contextRules", [])
    try:
        rules_budget = sum(int(r.get("maxTokens", 0)) for r in rules)
    except (TypeError, ValueError, AttributeError):
        raise Invalid(
            "contextRules", "contextRules must be a list of {source, maxTokens, injectionPoint}"
        ) from None
    variants = out.setdefault("variants", [])
    templates = [("template", out["template"])] + [
        (f"variants[{i}].template", str(v.get("template", "")))
        for i, v in enumerate(variants)
        if isinstance(v, dict)
    ]
    for field, template in templates:
        missing = sorted(template_names(template) - declared)
        if missing:
            raise Invalid(field, f"undeclared template variable(s): {', '.join(missing)}")
        if math.ceil(len(template) / 4) + rules_budget > max_tokens:
            raise Invalid(field, "estimated template tokens plus context rules exceed maxTokens")
    if variants and sum(int(v.get("weight", 0)) for v in variants if isinstance(v, dict)) != 100:
        raise Invalid("variants", "variant weights must sum to 100")
    out.setdefault("functions", [])
    _labels(out)
    out.setdefault("labels", {})
    return out


def context_policy(
    resource_id: str, body: dict[str, Any], models: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    if not ID_PATTERN.match(resource_id):
        raise Invalid("id", "id must match ^[a-z0-9][a-z0-9-]{0,63}$")
    out = _known(body, POLICY_FIELDS)
    model = models.get(str(out.get("model_id")))
    if model is None:
        raise Invalid("model_id", f"unknown model {out.get('model_id')}")
    limits = out.get("token_limit_matrix") or {}
    hard, soft = limits.get("hard_limit"), limits.get("soft_limit")
    if not isinstance(hard, int) or hard <= 0:
        raise Invalid("token_limit_matrix.hard_limit", "hard_limit must be a positive integer")
    if hard > int(model["max_tokens"]):
        raise Invalid(
            "token_limit_matrix.hard_limit",
            f"hard_limit exceeds the model's max_tokens {model['max_tokens']}",
        )
    if soft is not None and (not isinstance(soft, int) or soft >= hard):
        raise Invalid("token_limit_matrix.soft_limit", "soft_limit must be an integer below hard_limit")
    retention = out.get("memory_retention_directives") or {}
    threshold = retention.get("auto_compact_threshold")
    if threshold is not None and not (isinstance(threshold, int | float) and 0 < threshold <= 1):
        raise Invalid("memory_retention_directives.auto_compact_threshold", "must be in (0, 1]")
    if retention.get("eviction_policy") not in (None, "lru", "fifo", "summarize"):
        raise Invalid("memory_retention_directives.eviction_policy", "must be lru, fifo or summarize")
    for i, rule in enumerate(out.get("pii_masking") or []):
        try:
            re.compile(str(rule.get("pattern", "")))
        except (re.error, AttributeError):
            raise Invalid(f"pii_masking[{i}].pattern", "pattern does not compile") from None
    if out.get("format") not in (None, "json", "text"):
        raise Invalid("format", "format must be json or text")
    _labels(out)
    out["id"] = resource_id
    out.setdefault("labels", {})
    return out
