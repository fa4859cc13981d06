"""The service's own checks and defaults on incoming bodies, as docs/API.md describes them.

Written independently of ``reconciler.rules`` on purpose: the emulator is the other side of the
wire, and sharing code with the client would hide exactly the disagreements it exists to catch.
The two are kept from drifting by ``tests/emulator/test_conformance.py``: one table of bad bodies,
each refused here with 400 and refused by ``reconciler validate`` in its manifest form.

Each function returns the stored body (known fields only, at every depth, defaults applied) or
raises ``Invalid`` naming the field on the wire (``variants[1].weight``). Types are checked
before values, so a ``true`` where an integer belongs is a 400, never a 500.

Model capacity is enforced as the service does: a policy's ``format`` among the model's
``supported_formats``, an ``auto_compact_threshold`` only on a model with ``compaction_enabled``,
a prompt's context rules no more than its ``max_context_windows``. PII patterns must compile on
RE2 (the linear-time engine) and avoid the shapes a backtracking engine takes super-linear time on.

Known quirk, kept on purpose: the template check understands ``{% for %}`` and ``{% set %}``
bindings but not ``{% with %}`` or macro arguments, so such templates are refused although
``validate`` accepts them (a change that fails for good at apply time; apply tests rely on it).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jsonschema_rs
import re2  # type: ignore[import-untyped]  # google-re2, the linear-time engine patterns must compile on
from jinja2 import nodes
from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError

with warnings.catch_warnings():
    # The stdlib's regex parser: deprecated as a public name, but the exact parser `re` uses.
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_constants as sre
    import sre_parse

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
PROPERTY_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
VARIABLE_TYPES = ("string", "number", "boolean", "array")
SOURCES = ("conversation_history", "external_api", "knowledge_base")
INJECTION_POINTS = ("system", "user", "assistant")
EVICTION = ("lru", "fifo", "summarize")
DATA_TYPES = ("string", "number", "boolean", "date")
FORMATS = ("json", "text")
MAX_PROPERTIES = 10
MAX_DEPTH = 3
# The keywords of the Draft 7 meta-schema (writeOnly is not among them): anything else is refused.
SCHEMA_KEYWORDS = frozenset(
    {
        "$schema", "$id", "$ref", "$comment", "title", "description", "default", "readOnly",
        "examples", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
        "exclusiveMinimum", "maxLength", "minLength", "pattern", "additionalItems", "items",
        "maxItems", "minItems", "uniqueItems", "contains", "maxProperties", "minProperties",
        "required", "additionalProperties", "definitions", "properties", "patternProperties",
        "dependencies", "propertyNames", "const", "enum", "type", "format", "contentMediaType",
        "contentEncoding", "if", "then", "else", "allOf", "anyOf", "oneOf", "not",
    }
)  # fmt: skip
# Keywords whose value is one subschema, a list of them, or a name -> subschema map.
_ONE = ("additionalItems", "contains", "additionalProperties", "propertyNames", "if", "then", "else", "not")
_MANY = ("allOf", "anyOf", "oneOf")
_MAP = ("properties", "patternProperties", "definitions")

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
_JINJA = jinja2.Environment()
_NOT_VARIABLES = {"loop", "range", "dict", "lipsum", "cycler", "joiner", "namespace", "true", "false", "none"}


class Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Catalog:
    """What a body may refer to: the org's models and flows, and the stored functions and policies."""

    models: Mapping[str, Mapping[str, Any]]
    flows: Mapping[str, Mapping[str, Any]]
    has_function: Callable[[str], bool]
    has_policy: Callable[[str], bool]


# --- typed access -----------------------------------------------------------------------------


def _known(body: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    # Unknown fields are ignored, not stored (docs/API.md): a client typo is silently lost here.
    return {k: body[k] for k in fields if k in body}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, field: str, low: int | None = None, high: int | None = None) -> int:
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = f" in {low}..{high}" if low is not None and high is not None else ""
        bounds = bounds or (f" >= {low}" if low is not None else "")
        raise Invalid(field, f"{field} must be an integer{bounds}")
    return int(value)


def _str(value: Any, field: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise Invalid(field, f"{field} must be a {'' if empty else 'non-empty '}string")
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(field, f"{field} must be true or false")
    return value


def _choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise Invalid(field, f"{field} must be one of {', '.join(allowed)}")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid(field, f"{field} must be a list")
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(field, f"{field} must be an object")
    return value


def _labels(out: dict[str, Any]) -> None:
    labels = out.setdefault("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise Invalid("labels", "labels must map strings to strings")


# --- function definitions -----------------------------------------------------------------------


def _subschemas(schema: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    for key in _ONE:
        if key in schema:
            yield f"{path}.{key}", schema[key]
    for key in _MANY:
        for i, sub in enumerate(schema.get(key) or []):
            yield f"{path}.{key}[{i}]", sub
    for key in _MAP:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                yield f"{path}.{key}.{name}", sub
    items = schema.get("items")
    if isinstance(items, list):
        for i, sub in enumerate(items):
            yield f"{path}.items[{i}]", sub
    elif items is not None:
        yield f"{path}.items", items
    if isinstance(schema.get("dependencies"), dict):
        for name, sub in schema["dependencies"].items():
            if isinstance(sub, dict):
                yield f"{path}.dependencies.{name}", sub


def _check_keywords(schema: Any, path: str) -> None:
    if not isinstance(schema, dict):
        return
    for key in schema:
        if key not in SCHEMA_KEYWORDS:
            raise Invalid(f"{path}.{key}", f"{key!r} is not a JSON Schema (Draft 7) keyword")
    for sub_path, sub in _subschemas(schema, path):
        _check_keywords(sub, sub_path)


def _check_required(schema: Any, path: str) -> None:
    if not isinstance(schema, dict):
        return
    declared = schema.get("properties") or {}
    for i, name in enumerate(schema.get("required") or []):
        if name not in declared:
            raise Invalid(f"{path}.required[{i}]", f"required {name!r} is not a declared property")
    for name, prop in declared.items():
        _check_required(prop, f"{path}.properties.{name}")
    if isinstance(schema.get("items"), dict):
        _check_required(schema["items"], f"{path}.items")


def _depth(schema: Any) -> int:
    if not isinstance(schema, dict):
        return 0
    # Objects count; an array is transparent (an array of objects is one level, like an object).
    inner = [_depth(p) for p in (schema.get("properties") or {}).values()]
    if isinstance(schema.get("items"), dict):
        inner.append(_depth(schema["items"]))
    own = 1 if schema.get("type") == "object" else 0
    return own + max(inner, default=0)


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


# Draft 7's metaschema in Rust: ~1.3 ms of the emulator's ~1.6 ms per function write was
# jsonschema building and running it in Python. Formats unchecked, as jsonschema's check_schema.
_DRAFT7_META = jsonschema_rs.Draft7Validator(Draft7Validator.META_SCHEMA, validate_formats=False)


def function_definition(resource_id: str, body: dict[str, Any]) -> dict[str, Any]:
    if not ID_PATTERN.match(resource_id):
        raise Invalid("id", "id must match ^[a-z0-9][a-z0-9-]{0,63}$")
    if "id" in body and body["id"] != resource_id:
        raise Invalid("id", "the body's id differs from the path's")
    out = _known(body, FUNCTION_FIELDS)
    _str(out.get("name"), "name", empty=False)
    _str(out.get("description"), "description", empty=False)
    _int(out.get("timeoutMillis"), "timeoutMillis", 1, 60000)
    params = _object(out.get("parameters"), "parameters")
    try:
        if not _DRAFT7_META.is_valid(params):
            Draft7Validator.check_schema(params)  # words the error (its answer wins, as validate's)
    except SchemaError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        raise Invalid(f"parameters{where}", f"invalid JSON Schema: {exc.message}") from None
    if params.get("type") != "object":
        raise Invalid("parameters.type", "parameters must be of type object")
    if "enum" in params:
        raise Invalid("parameters.enum", "the parameters object itself cannot be an enum")
    _check_keywords(params, "parameters")
    props = params.get("properties") or {}
    if len(props) > MAX_PROPERTIES:
        raise Invalid("parameters.properties", f"at most {MAX_PROPERTIES} properties")
    for name, prop in props.items():
        if not isinstance(prop, dict) or prop.get("type") not in PROPERTY_TYPES:
            raise Invalid(f"parameters.properties.{name}.type", "unsupported property type")
    if _depth(params) > MAX_DEPTH:
        raise Invalid("parameters", f"object nesting deeper than {MAX_DEPTH} levels")
    _check_required(params, "parameters")
    _labels(out)
    out["id"] = resource_id
    out["parameters"] = _string_defaults(params)
    return out


# --- prompts --------------------------------------------------------------------------------------


def template_names(template: str, field: str) -> set[str]:
    """Names a template reads, minus those bound by {% for %} and {% set %} (not {% with %})."""
    try:
        tree = _JINJA.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise Invalid(field, f"template syntax error on line {exc.lineno}: {exc.message}") from None
    bound: set[str] = set()
    for node in tree.find_all((nodes.For, nodes.Assign, nodes.AssignBlock)):
        assert isinstance(node, nodes.For | nodes.Assign | nodes.AssignBlock)
        target = node.target
        bound.update(n.name for n in target.find_all(nodes.Name))
        if isinstance(target, nodes.Name):
            bound.add(target.name)
    read = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    return read - bound - _NOT_VARIABLES


def _variables(value: Any) -> list[dict[str, Any]]:
    out, seen = [], set()
    for i, item in enumerate(_list(value, "variables")):
        where = f"variables[{i}]"
        item = _object(item, where)
        variable: dict[str, Any] = {"name": _str(item.get("name"), f"{where}.name", empty=False)}
        if variable["name"] in seen:
            raise Invalid(f"{where}.name", f"variable {variable['name']!r} is declared twice")
        seen.add(variable["name"])
        variable["type"] = _choice(item.get("type", "string"), f"{where}.type", VARIABLE_TYPES)
        variable["required"] = _bool(item.get("required", False), f"{where}.required")
        if item.get("defaultValue") is not None:
            variable["defaultValue"] = item["defaultValue"]
        out.append(variable)
    return out


def _context_rules(value: Any) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(_list(value, "contextRules")):
        where = f"contextRules[{i}]"
        item = _object(item, where)
        out.append(
            {
                "source": _choice(item.get("source"), f"{where}.source", SOURCES),
                "maxTokens": _int(item.get("maxTokens"), f"{where}.maxTokens", 0),
                "injectionPoint": _choice(
                    item.get("injectionPoint", "system"), f"{where}.injectionPoint", INJECTION_POINTS
                ),
            }
        )
    return out


def _variants(value: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, item in enumerate(_list(value, "variants")):
        where = f"variants[{i}]"
        item = _object(item, where)
        name = _str(item.get("name"), f"{where}.name")
        if name in names:
            raise Invalid(f"{where}.name", f"variant name {name!r} is used twice")
        names.add(name)
        out.append(
            {
                "name": name,
                "template": _str(item.get("template"), f"{where}.template"),
                "weight": _int(item.get("weight"), f"{where}.weight", 0, 100),
            }
        )
    if out and sum(v["weight"] for v in out) != 100:
        raise Invalid("variants", "variant weights must sum to 100")
    return out


def prompt(body: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    out = _known(body, PROMPT_FIELDS)
    _str(out.get("name"), "name", empty=False)
    if not SEMVER.match(_str(out.get("version"), "version")):
        raise Invalid("version", "version must be a semantic version like 1.2.0")
    _str(out.get("template"), "template")
    if _str(out.get("modelId"), "modelId") not in catalog.models:
        raise Invalid("modelId", f"unknown model {out['modelId']}")
    max_tokens = _int(out.get("maxTokens"), "maxTokens", 1)
    out["variables"] = variables = _variables(out.get("variables", []))
    out["contextRules"] = rules = _context_rules(out.get("contextRules", []))
    windows = catalog.models[out["modelId"]].get("max_context_windows")
    if isinstance(windows, int) and len(rules) > windows:
        raise Invalid("contextRules", f"model {out['modelId']} takes at most {windows} context windows")
    out["variants"] = variants = _variants(out.get("variants", []))
    functions = _list(out.get("functions", []), "functions")
    for i, function in enumerate(functions):
        if not catalog.has_function(_str(function, f"functions[{i}]")):
            raise Invalid(f"functions[{i}]", f"no function definition {function!r}")
    out["functions"] = functions
    policy = out.get("contextPolicyId")
    if policy is not None and not catalog.has_policy(_str(policy, "contextPolicyId")):
        raise Invalid("contextPolicyId", f"no context policy {policy!r}")
    declared = {v["name"] for v in variables}
    budget = sum(r["maxTokens"] for r in rules)
    used: set[str] = set()
    templates = [("template", out["template"])]
    templates += [(f"variants[{i}].template", v["template"]) for i, v in enumerate(variants)]
    for field, template in templates:
        names = template_names(template, field)
        used |= names
        missing = sorted(names - declared)
        if missing:
            raise Invalid(field, f"undeclared template variable(s): {', '.join(missing)}")
        if math.ceil(len(template) / 4) + budget > max_tokens:
            raise Invalid(field, "estimated template tokens plus context rules exceed maxTokens")
    for i, variable in enumerate(variables):
        if variable["required"] and variable["name"] not in used:
            raise Invalid(f"variables[{i}]", f"required variable {variable['name']!r} is used by no template")
    _labels(out)
    return out


# --- context policies -----------------------------------------------------------------------------


def _repeats_without_bound(items: Any) -> bool:
    """Does any part of a parsed pattern repeat without an upper bound?"""
    for op, arg in items:
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT) and arg[1] == sre.MAXREPEAT:
            return True
        if any(_repeats_without_bound(sub) for sub in _nested(arg)):
            return True
    return False


def _nested(arg: Any) -> Iterator[Any]:
    """Every sub-pattern inside an opcode's argument, whatever its shape."""
    if isinstance(arg, sre_parse.SubPattern):
        yield arg
    elif isinstance(arg, tuple | list):
        for part in arg:
            yield from _nested(part)


def _exponential(items: Any) -> bool:
    """An unbounded repeat of something that itself repeats without bound: (a+)+, (\\w*\\s?)*."""
    for op, arg in items:
        unbounded = op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and arg[1] == sre.MAXREPEAT
        if unbounded and _repeats_without_bound(arg[2]):
            return True
        if any(_exponential(sub) for sub in _nested(arg)):
            return True
    return False


_WIDE = None  # a character set too broad to enumerate: \\w, ., [^x]


def _starts(items: Any) -> set[int] | None:
    """What a sub-pattern's first character can be (None: wide)."""
    if not items:
        return set()
    op, arg = items[0]
    if op is sre.LITERAL:
        return {arg}
    if op is sre.IN:
        out: set[int] = set()
        for kind, value in arg:
            if kind is sre.LITERAL:
                out.add(value)
            elif kind is sre.RANGE and value[1] - value[0] < 256:
                out.update(range(value[0], value[1] + 1))
            else:
                return _WIDE
        return out
    if op is sre.SUBPATTERN:
        return _starts(arg[3])
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and arg[0] > 0:
        return _starts(arg[2])
    return _WIDE


def _clash(a: set[int] | None, b: set[int] | None) -> bool:
    return a is _WIDE or b is _WIDE or bool(a and b and a & b)


def _alike_alternatives(items: Any) -> bool:
    """Alternatives that can match the same text; sre turns (a|a) into a(?:|) and (a|a|b) into
    [aab], so equal branches and repeated class members count."""
    for op, arg in items:
        if op is sre.BRANCH:
            branches = [list(b) for b in arg[1]]
            for i, one in enumerate(branches):
                for other in branches[i + 1 :]:
                    if one == other or (one and other and _clash(_starts(one), _starts(other))):
                        return True
        if op is sre.IN:
            members = [value for kind, value in arg if kind is sre.LITERAL]
            if len(set(members)) < len(members):
                return True
        if op is sre.SUBPATTERN and _alike_alternatives(arg[3]):
            return True
    return False


def _polynomial(items: Any) -> bool:
    """(a|a)*, three unbounded repeats in a row that can match alike (\\w*\\w*\\w*), and a group
    with an unbounded repeat inside repeated more than three times ((.*a){12})."""
    chain: list[set[int] | None] = []
    for op, arg in items:
        repeat = op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)
        if repeat and arg[1] == sre.MAXREPEAT:
            if _alike_alternatives(arg[2]):
                return True
            first = _starts(arg[2])
            chain = [c for c in chain if _clash(c, first)] + [first]
            if len(chain) >= 3:
                return True
        else:
            chain = []
            if repeat and arg[1] > 3 and _repeats_without_bound(arg[2]):
                return True
        if any(_polynomial(sub) for sub in _nested(arg)):
            return True
    return False


_RE2 = re2.Options()
_RE2.log_errors = False


def _pii_rules(value: Any) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(_list(value, "pii_masking")):
        where = f"pii_masking[{i}]"
        item = _object(item, where)
        pattern = _str(item.get("pattern"), f"{where}.pattern")
        try:
            re2.compile(pattern, _RE2)
        except re2.error:
            raise Invalid(
                f"{where}.pattern", "pattern does not compile on RE2 (linear-time) syntax"
            ) from None
        try:
            parsed = sre_parse.parse(pattern)
        except (re.error, RecursionError, OverflowError):
            raise Invalid(f"{where}.pattern", "pattern does not compile") from None
        if _exponential(parsed):
            raise Invalid(f"{where}.pattern", "nested unbounded repetition can take exponential time")
        if _polynomial(parsed):
            raise Invalid(f"{where}.pattern", "ambiguous repetition can take polynomial time")
        out.append(
            {
                "name": _str(item.get("name"), f"{where}.name"),
                "pattern": pattern,
                "replacement": _str(item.get("replacement", "[REDACTED]"), f"{where}.replacement"),
            }
        )
    return out


def _attribute_mappings(value: Any, flow: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    inputs = {
        str(d.get("name")): d.get("dataType")
        for d in (flow or {}).get("inputDefinitions", [])
        if isinstance(d, dict)
    }
    out = []
    for i, item in enumerate(_list(value, "attribute_mappings")):
        where = f"attribute_mappings[{i}]"
        item = _object(item, where)
        mapping = {
            "source": _str(item.get("source"), f"{where}.source"),
            "attribute": _str(item.get("attribute"), f"{where}.attribute"),
            "data_type": _choice(item.get("data_type"), f"{where}.data_type", DATA_TYPES),
        }
        if flow is not None:
            if mapping["attribute"] not in inputs:
                raise Invalid(f"{where}.attribute", f"the flow has no input {mapping['attribute']!r}")
            if inputs[mapping["attribute"]] != mapping["data_type"]:
                raise Invalid(f"{where}.data_type", f"the flow's input is a {inputs[mapping['attribute']]}")
        out.append(mapping)
    return out


def context_policy(resource_id: str, body: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    if not ID_PATTERN.match(resource_id):
        raise Invalid("id", "id must match ^[a-z0-9][a-z0-9-]{0,63}$")
    if "id" in body and body["id"] != resource_id:
        raise Invalid("id", "the body's id differs from the path's")
    out = _known(body, POLICY_FIELDS)
    model = catalog.models.get(_str(out.get("model_id"), "model_id"))
    if model is None:
        raise Invalid("model_id", f"unknown model {out.get('model_id')}")
    limits = _object(out.get("token_limit_matrix"), "token_limit_matrix")
    hard = _int(limits.get("hard_limit"), "token_limit_matrix.hard_limit", 1)
    if hard > int(model["max_tokens"]):
        raise Invalid(
            "token_limit_matrix.hard_limit",
            f"hard_limit exceeds the model's max_tokens {model['max_tokens']}",
        )
    matrix: dict[str, Any] = {"hard_limit": hard}
    if limits.get("soft_limit") is not None:
        soft = _int(limits["soft_limit"], "token_limit_matrix.soft_limit", 1)
        if soft >= hard:
            raise Invalid("token_limit_matrix.soft_limit", "soft_limit must be below hard_limit")
        matrix["soft_limit"] = soft
    out["token_limit_matrix"] = matrix
    if "memory_retention_directives" in out:
        where = "memory_retention_directives"
        retention = _object(out[where], where)
        kept: dict[str, Any] = {}
        for flag in ("persist_system_prompts", "retain_user_pii"):
            if retention.get(flag) is not None:
                kept[flag] = _bool(retention[flag], f"{where}.{flag}")
        threshold = retention.get("auto_compact_threshold")
        if threshold is not None:
            if not (isinstance(threshold, int | float) and not isinstance(threshold, bool)) or not (
                0 < threshold <= 1
            ):
                raise Invalid(f"{where}.auto_compact_threshold", "must be a number in (0, 1]")
            kept["auto_compact_threshold"] = threshold
        if retention.get("eviction_policy") is not None:
            kept["eviction_policy"] = _choice(
                retention["eviction_policy"], f"{where}.eviction_policy", EVICTION
            )
        out[where] = kept
    if "pii_masking" in out:
        out["pii_masking"] = _pii_rules(out["pii_masking"])
    if "metadata_fields" in out:
        fields = _list(out["metadata_fields"], "metadata_fields")
        for i, name in enumerate(fields):
            _str(name, f"metadata_fields[{i}]")
    flow = None
    if out.get("flow_id") is not None:
        flow = catalog.flows.get(_str(out["flow_id"], "flow_id"))
        if flow is None:
            raise Invalid("flow_id", f"no flow {out['flow_id']!r}")
    if "attribute_mappings" in out:
        out["attribute_mappings"] = _attribute_mappings(out["attribute_mappings"], flow)
    if out.get("format") is not None:
        _choice(out["format"], "format", FORMATS)
        formats = model.get("supported_formats")
        if isinstance(formats, list) and out["format"] not in formats:
            raise Invalid("format", f"model {model['model_id']} does not support format {out['format']}")
    threshold = out.get("memory_retention_directives", {}).get("auto_compact_threshold")
    if threshold is not None and model.get("compaction_enabled") is False:
        raise Invalid(
            "memory_retention_directives.auto_compact_threshold",
            f"model {model['model_id']} does not support compaction",
        )
    _labels(out)
    out["id"] = resource_id
    return out
