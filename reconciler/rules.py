"""Offline validation: the constraints the service enforces, plus references and token budgets.

Everything here runs on loaded manifests alone (no network), so `validate` can tell an author
everything that is wrong before anything touches a live org. Rules that need the live org
(model capacity, flow inputs) live in ``plan.check_live``. Each problem points at the offending
field's line and column.
"""

from __future__ import annotations

import difflib
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes

with warnings.catch_warnings():
    # The stdlib's own regex parser: deprecated as a public name, but the only exact parser.
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_constants as c
    import sre_parse as p
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match

from reconciler.errors import ManifestError, Problem
from reconciler.loader import LoadedManifest, ManifestSet, collect_manifests
from reconciler.models import ContextPolicy, FunctionDefinition, Kind, Prompt, ResourceKey

FUNCTION_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
PROPERTY_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
MAX_PROPERTIES = 10
# Depth counts objects: the parameters object is depth 1, an object property inside it depth 2,
# an object inside that depth 3. The service refuses a fourth level.
MAX_OBJECT_DEPTH = 3
_ENV = jinja2.Environment()
# Built once: Draft7Validator.check_schema would build this validator again for every function.
_META_SCHEMA = Draft7Validator(Draft7Validator.META_SCHEMA)
# JSON Schema ignores keywords it does not know, so a typo (`maximu: 5`) silently drops a limit;
# the keywords Draft 7 defines are the only ones a parameter schema may use.
SCHEMA_KEYWORDS = frozenset(Draft7Validator.META_SCHEMA["properties"])
# Keywords whose value is a subschema, a list of subschemas, or a map of names to subschemas.
_SUBSCHEMA = (
    *("items", "additionalItems", "additionalProperties", "contains", "propertyNames"),
    *("not", "if", "then", "else"),
)
_SUBSCHEMA_LISTS = ("items", "allOf", "anyOf", "oneOf")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "definitions", "dependencies")


def estimate_tokens(text: str) -> int:
    """The service's estimate: characters / 4, rounded up."""
    return math.ceil(len(text) / 4)


class _Checker:
    def __init__(self, loaded: LoadedManifest, problems: list[Problem]) -> None:
        self.loaded, self.problems = loaded, problems

    def add(self, path: str, message: str) -> None:
        line, col = self.loaded.where(path)
        self.problems.append(Problem(self.loaded.source.file, line, col, message, path))


# --- FunctionDefinition ---------------------------------------------------------------------


def _object_depths(schema: Any, path: str, depth: int) -> Iterator[tuple[str, int]]:
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "object":
        yield path, depth
        for name, prop in (schema.get("properties") or {}).items():
            yield from _object_depths(prop, f"{path}.properties.{name}", depth + 1)
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        yield from _object_depths(schema["items"], f"{path}.items", depth)


def unknown_keywords(schema: Any, path: str) -> Iterator[tuple[str, str]]:
    """(field path, message) for each unknown keyword or null value in a JSON Schema."""
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        where = f"{path}.{key}"
        # `{description: Source, e.g. EUR}`: the comma ends the value and starts a key `e.g. EUR`.
        comma = " (a comma inside {...} ends a value: quote the text that holds it)" if value is None else ""
        if key not in SCHEMA_KEYWORDS:
            close = difflib.get_close_matches(key, SCHEMA_KEYWORDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close and not comma else comma
            yield where, f"unknown JSON Schema keyword {key!r}{hint}"
        elif value is None:
            yield where, f"{key!r} has no value (null){comma}"
    for key in _SUBSCHEMA:
        yield from unknown_keywords(schema.get(key), f"{path}.{key}")
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            for i, item in enumerate(schema[key]):
                yield from unknown_keywords(item, f"{path}.{key}[{i}]")
    for key in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            for name, item in schema[key].items():
                yield from unknown_keywords(item, f"{path}.{key}.{name}")


def check_function(check: _Checker, fn: FunctionDefinition) -> None:
    name = fn.metadata.name
    if not FUNCTION_ID.match(name):
        check.add(
            "metadata.name",
            f"{name!r} is not a valid function id: lowercase letters, digits and '-', "
            "starting with a letter or digit, at most 64 characters",
        )
    if not 1 <= fn.spec.timeout_millis <= 60000:
        check.add("spec.timeoutMillis", f"must be between 1 and 60000, got {fn.spec.timeout_millis}")
    params = fn.spec.parameters
    unknown = list(unknown_keywords(params, "spec.parameters"))
    for path, message in unknown:
        check.add(path, message)
    if unknown:
        return
    error = best_match(_META_SCHEMA.iter_errors(params))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        check.add(
            "spec.parameters" + (f".{where}" if where else ""), f"not a valid JSON Schema: {error.message}"
        )
        return
    if params.get("type") != "object":
        check.add(
            "spec.parameters.type",
            f"parameters must be a JSON Schema of type object, got {params.get('type')!r}",
        )
        return
    if "enum" in params:
        check.add("spec.parameters.enum", "the parameters object itself cannot be an enum")
    props = params.get("properties") or {}
    if len(props) > MAX_PROPERTIES:
        check.add("spec.parameters.properties", f"at most {MAX_PROPERTIES} parameters, got {len(props)}")
    for prop_name, prop in props.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if kind not in PROPERTY_TYPES:
            check.add(
                f"spec.parameters.properties.{prop_name}.type",
                f"parameter {prop_name!r} has type {kind!r}; allowed: {', '.join(sorted(PROPERTY_TYPES))}",
            )
    for path, depth in _object_depths(params, "spec.parameters", 1):
        if depth > MAX_OBJECT_DEPTH:
            check.add(path, f"objects nest {depth} levels deep here; the limit is {MAX_OBJECT_DEPTH}")
    for path, schema in _schemas_with_required(params, "spec.parameters"):
        for i, required in enumerate(schema.get("required") or []):
            if required not in (schema.get("properties") or {}):
                check.add(
                    f"{path}.required[{i}]", f"required parameter {required!r} is not a declared property"
                )


def _schemas_with_required(schema: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    if "required" in schema:
        yield path, schema
    for name, prop in (schema.get("properties") or {}).items():
        yield from _schemas_with_required(prop, f"{path}.properties.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _schemas_with_required(schema["items"], f"{path}.items")


# --- Prompt ---------------------------------------------------------------------------------


def template_variables(template: str) -> set[str]:
    """Variables a Jinja2 template reads (loop variables and its own assignments excluded)."""
    tree = _ENV.parse(template)
    # Walking the parsed tree is half the cost of jinja2.meta (which compiles the template) and
    # gives the same answer for what prompt templates use: names read, minus those bound by
    # {% for %}, {% set %}, {% with %} and macro arguments.
    bound: set[str] = set()
    for node in tree.find_all((nodes.For, nodes.Assign, nodes.AssignBlock, nodes.With, nodes.Macro)):
        match node:
            case nodes.For() | nodes.Assign() | nodes.AssignBlock():
                targets: list[nodes.Node] = [node.target]
            case nodes.With():
                targets = list(node.targets)
            case nodes.Macro():
                targets = list(node.args)
            case _:
                targets = []
        for target in targets:
            bound.update(n.name for n in target.find_all(nodes.Name))
            if isinstance(target, nodes.Name):
                bound.add(target.name)
    read = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    return read - bound - {"loop", "range", "dict", "lipsum", "cycler", "joiner", "namespace"}


def check_prompt(check: _Checker, prompt: Prompt, known: Mapping[ResourceKey, LoadedManifest]) -> None:
    spec = prompt.spec
    if not SEMVER.match(spec.version):
        check.add("spec.version", f"{spec.version!r} is not a semantic version like 1.2.0")
    declared = {v.name for v in spec.variables}
    templates = [("spec.template", spec.template)] + [
        (f"spec.variants[{i}].template", v.template) for i, v in enumerate(spec.variants)
    ]
    used: set[str] = set()
    for path, template in templates:
        try:
            found = template_variables(template)
        except jinja2.TemplateSyntaxError as exc:
            line, col = check.loaded.where(path)
            check.problems.append(
                Problem(
                    check.loaded.source.file,
                    line + max(0, (exc.lineno or 1) - 1),
                    col,
                    f"template syntax error: {exc.message}",
                    path,
                )
            )
            continue
        used |= found
        for name in sorted(found - declared):
            check.add(path, f"template uses {{{{ {name} }}}} but spec.variables does not declare {name!r}")
        rules_budget = sum(r.max_tokens for r in spec.context_rules)
        needed = estimate_tokens(template) + rules_budget
        if needed > spec.max_tokens:
            check.add(
                path,
                f"token budget exceeded: template ~{estimate_tokens(template)} + context rules "
                f"{rules_budget} = {needed} > maxTokens {spec.max_tokens}",
            )
    for i, variable in enumerate(spec.variables):
        if variable.required and variable.name not in used:
            check.add(
                f"spec.variables[{i}]", f"required variable {variable.name!r} is not used by any template"
            )
    if spec.variants:
        total = sum(v.weight for v in spec.variants)
        if total != 100:
            check.add("spec.variants", f"variant weights must sum to 100, got {total}")
        names = [v.name for v in spec.variants]
        for i, name in enumerate(names):
            if names.index(name) != i:
                check.add(f"spec.variants[{i}].name", f"variant name {name!r} is used twice")
    for i, function in enumerate(spec.functions):
        if ResourceKey(Kind.FUNCTION_DEFINITION, function) not in known:
            check.add(
                f"spec.functions[{i}]", f"references FunctionDefinition {function!r}, which is not defined"
            )
    if spec.context_policy and ResourceKey(Kind.CONTEXT_POLICY, spec.context_policy) not in known:
        check.add(
            "spec.contextPolicy", f"references ContextPolicy {spec.context_policy!r}, which is not defined"
        )


# --- ContextPolicy --------------------------------------------------------------------------


def _unbounded(items: Any) -> bool:
    """Does a parsed regex contain a repeat that can match unboundedly many times?"""
    for op, arg in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            if arg[1] == c.MAXREPEAT or _unbounded(arg[2]):
                return True
        elif (
            (op is c.SUBPATTERN and _unbounded(arg[3]))
            or (op is c.BRANCH and any(_unbounded(b) for b in arg[1]))
            or (isinstance(arg, p.SubPattern) and _unbounded(arg))
        ):
            return True
    return False


def _catastrophic(items: Any) -> bool:
    """A repeated group whose body can itself repeat without bound: (a+)+, (a*)*, (\\w+\\s?)*."""
    for op, arg in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and arg[1] == c.MAXREPEAT and _unbounded(arg[2]):
            return True
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and _catastrophic(arg[2]):
            return True
        if op is c.SUBPATTERN and _catastrophic(arg[3]):
            return True
        if op is c.BRANCH and any(_catastrophic(b) for b in arg[1]):
            return True
    return False


def check_pattern(pattern: str) -> str:
    """Why a PII pattern is refused ('' when it is fine)."""
    try:
        re.compile(pattern)
        parsed = p.parse(pattern)
    except re.error as exc:
        return f"does not compile: {exc}"
    if _catastrophic(parsed):
        return "nested unbounded repetition (like (a+)+) can take exponential time on some input"
    return ""


def check_policy(check: _Checker, policy: ContextPolicy) -> None:
    limits, retention = policy.spec.token_limits, policy.spec.retention
    if limits.soft_limit is not None and limits.soft_limit_ratio is not None:
        check.add("spec.tokenLimits", "set softLimit or softLimitRatio, not both")
    if limits.soft_limit is not None and limits.soft_limit >= limits.hard_limit:
        check.add(
            "spec.tokenLimits.softLimit",
            f"softLimit {limits.soft_limit} must be below hardLimit {limits.hard_limit}",
        )
    threshold = retention.auto_compact_threshold
    if threshold is not None and not 0 < threshold <= 1:
        check.add("spec.retention.autoCompactThreshold", f"must be in (0, 1], got {threshold}")
    for i, rule in enumerate(policy.spec.pii_masking):
        why = check_pattern(rule.pattern)
        if why:
            check.add(f"spec.piiMasking[{i}].pattern", f"PII pattern {rule.pattern!r} {why}")


def check(manifests: ManifestSet) -> list[Problem]:
    """Every offline rule over a loaded set; an empty list means valid."""
    problems: list[Problem] = []
    known = manifests.by_key()
    for loaded in manifests.manifests:
        checker = _Checker(loaded, problems)
        match loaded.manifest:
            case FunctionDefinition() as fn:
                check_function(checker, fn)
            case Prompt() as prompt:
                check_prompt(checker, prompt, known)
            case ContextPolicy() as policy:
                check_policy(checker, policy)
    return problems


def validate_manifests(paths: Sequence[Path], variables: Mapping[str, str] | None = None) -> ManifestSet:
    """Load and check; raises ManifestError with every problem from both steps."""
    # Rules run on whatever loaded, so one run reports load and rule problems together.
    manifests, problems = collect_manifests(paths, variables)
    problems += check(manifests)
    if problems:
        raise ManifestError(problems)
    return manifests
