"""Offline validation: the constraints the service enforces, plus references and token budgets.

Everything here runs on loaded manifests alone (no network), so `validate` can tell an author
everything that is wrong before anything touches a live org. Rules that need the live org
(model capacity, flow inputs) are in ``check_live``. Each problem points at the offending
field's line and column.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

with warnings.catch_warnings():
    # The stdlib's own regex parser: deprecated as a public name, but the only exact parser.
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_constants as c
    import sre_parse as p

from reconciler.errors import ManifestError, Problem
from reconciler.loader import LoadedManifest, ManifestSet, Steps, finish, load_checked_steps
from reconciler.models import ContextPolicy, FunctionDefinition, Kind, Prompt, ResourceKey, key_of

if TYPE_CHECKING:
    from jinja2 import nodes

# Jinja2, jsonschema, jsonschema-rs and RE2 are imported on first use: a plan whose manifests all
# come from the cache checks no template, schema or pattern (they were ~70 ms of every start).

FUNCTION_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
PROPERTY_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
MAX_PROPERTIES = 10
# Depth counts objects: the parameters object is depth 1, an object property inside it depth 2,
# an object inside that depth 3. The service refuses a fourth level.
MAX_OBJECT_DEPTH = 3


@functools.cache
def _jinja_env() -> Any:
    import jinja2

    return jinja2.Environment()


@functools.cache
def _meta_schemas() -> tuple[Any, Any]:
    """Draft 7's metaschema as (jsonschema validator, jsonschema-rs validator), built once:
    Draft7Validator.check_schema would build its validator again for every function. The Rust
    one is ~150x faster: it only says whether a schema is valid, and jsonschema words the error
    when it is not. Formats are not checked, as jsonschema does not check them either; where the
    two ever disagree, jsonschema's answer is the one reported."""
    import jsonschema_rs
    from jsonschema import Draft7Validator

    return (
        Draft7Validator(Draft7Validator.META_SCHEMA),
        jsonschema_rs.Draft7Validator(Draft7Validator.META_SCHEMA, validate_formats=False),
    )


@functools.cache
def schema_keywords() -> frozenset[str]:
    """JSON Schema ignores keywords it does not know, so a typo (`maximu: 5`) silently drops a
    limit; the keywords Draft 7 defines are the only ones a parameter schema may use."""
    from jsonschema import Draft7Validator

    return frozenset(Draft7Validator.META_SCHEMA["properties"])


def __getattr__(name: str) -> Any:  # SCHEMA_KEYWORDS stays importable, built on first use
    if name == "SCHEMA_KEYWORDS":
        return schema_keywords()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


# --- Bounds on template previews ------------------------------------------------------------
# Previews run on every pull request and the author is untrusted: `render` and `plan --format
# markdown` stop a template at these limits (prompting's sandbox enforces them while rendering)
# and `validate` refuses what it can see in the source (``template_bounds``). A prompt of a
# million characters is ~250k tokens, above every model's window.
MAX_TEMPLATE_OUTPUT = 1_000_000  # characters produced by one render (any value, and in total)
MAX_RANGE = 10_000  # items of one range(), and the widths given to padding filters and methods
MAX_LOOP_ITERATIONS = 100_000  # loop iterations plus calls, over one render
MAX_INT_BITS = 4_096  # integers a template computes (9 ** 9999999 would burn 13 s of CPU)
RENDER_SECONDS = 5.0  # wall clock for one render


def _literal_int(node: nodes.Node) -> int | None:
    from jinja2 import nodes

    if isinstance(node, nodes.Const) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, nodes.Neg):
        inner = _literal_int(node.node)
        return -inner if inner is not None else None
    return None


def template_bounds(template: str | nodes.Template) -> list[str]:
    """What the template's source alone shows it would exceed at render time (the sandbox
    catches the rest): a literal range() over MAX_RANGE, ``**`` on literals whose result is over
    MAX_INT_BITS, a literal string or list repeated past MAX_TEMPLATE_OUTPUT. Syntax errors
    are reported elsewhere, so a template that does not parse gives no finding here.
    ``template`` may be given already parsed (``check_prompt`` parses each template once)."""
    import jinja2
    from jinja2 import nodes

    try:
        tree = _jinja_env().parse(template) if isinstance(template, str) else template
    except jinja2.TemplateSyntaxError:
        return []
    found: list[str] = []
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name == "range":
            bounds = [_literal_int(a) for a in call.args]
            if bounds and all(b is not None for b in bounds):
                try:
                    size = len(range(*[b for b in bounds if b is not None]))
                except (ValueError, OverflowError):
                    size = MAX_RANGE + 1
                if size > MAX_RANGE:
                    found.append(
                        f"line {call.lineno}: range() of {size:,} items; previews allow {MAX_RANGE:,}"
                    )
    for power in tree.find_all(nodes.Pow):
        base, exponent = _literal_int(power.left), _literal_int(power.right)
        if base is not None and exponent is not None and abs(base) > 1 and exponent > 0:
            bits = exponent * abs(base).bit_length()
            if bits > MAX_INT_BITS:
                found.append(
                    f"line {power.lineno}: {base} ** {exponent} is a number of ~{bits:,} bits; "
                    f"previews allow {MAX_INT_BITS:,}"
                )
    for product in tree.find_all(nodes.Mul):
        for seq, times in ((product.left, product.right), (product.right, product.left)):
            count = _literal_int(times)
            if count is None:
                continue
            made: int | None = None
            if isinstance(seq, nodes.Const) and isinstance(seq.value, str):
                made = len(seq.value) * count
            elif isinstance(seq, nodes.List | nodes.Tuple):
                made = len(seq.items) * count
            if made is not None and made > MAX_TEMPLATE_OUTPUT:
                found.append(
                    f"line {product.lineno}: repeating a literal makes {made:,} items or characters; "
                    f"previews allow {MAX_TEMPLATE_OUTPUT:,}"
                )
    return found


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
        if key not in schema_keywords():
            close = difflib.get_close_matches(key, schema_keywords(), n=1)
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
    meta_schema, fast_meta_schema = _meta_schemas()
    if fast_meta_schema.is_valid(params):
        error = None
    else:
        from jsonschema.exceptions import best_match

        error = best_match(meta_schema.iter_errors(params))
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


def template_variables(template: str | nodes.Template) -> set[str]:
    """Variables a Jinja2 template reads (loop variables and its own assignments excluded);
    ``template`` is its source or its parsed tree."""
    from jinja2 import nodes

    tree = _jinja_env().parse(template) if isinstance(template, str) else template
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
    check_prompt_alone(check, prompt)
    check_references(check, prompt, known)


def check_prompt_alone(check: _Checker, prompt: Prompt) -> None:
    """The rules a prompt meets on its own (what the per-file cache may remember)."""
    import jinja2

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
            tree = _jinja_env().parse(template)  # once: template_variables and template_bounds share it
            found = template_variables(tree)
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
        for why in template_bounds(tree):
            check.add(path, f"template would exceed a preview limit: {why}")
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


def check_references(
    check: _Checker, prompt: Prompt, known: Mapping[ResourceKey, LoadedManifest | None]
) -> None:
    """The functions and the policy a prompt names are defined (a rule across files: it runs on
    every load, cached or not)."""
    spec = prompt.spec
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


# PII patterns run on RE2 (google-re2), whose matching time is linear in the text: no pattern
# can hang a preview, whatever it is. RE2 refuses what it cannot do in linear time
# (backreferences, lookaround) and programs over its memory budget, so `validate` refuses those.
# The service may still run patterns on a backtracking engine, so the shapes that take it
# super-linear time are refused too (``_backtracks``).


@functools.cache
def _re2_options() -> Any:
    import re2  # type: ignore[import-untyped]  # google-re2: linear-time matching; no stubs

    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    return options


def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2; raises ValueError saying why RE2 refuses it."""
    import re2

    try:
        return re2.compile(pattern, _re2_options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(text) from None


def _repeat(op: Any, arg: Any) -> tuple[int, int, Any] | None:
    """(min, max, body) of a repeat opcode, else None; max is c.MAXREPEAT when unbounded."""
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
        return arg[0], arg[1], arg[2]
    return None


def _children(op: Any, arg: Any) -> list[Any]:
    """The sub-patterns directly inside one opcode."""
    if _repeat(op, arg):
        return [arg[2]]
    if op is c.SUBPATTERN:
        return [arg[3]]
    if op is c.BRANCH:
        return list(arg[1])
    if op in (c.ASSERT, c.ASSERT_NOT):
        return [arg[1]]
    return [arg] if isinstance(arg, p.SubPattern) else []


def _unbounded(items: Any) -> bool:
    """Does a parsed regex contain a repeat that can match unboundedly many times?"""
    for op, arg in items:
        rep = _repeat(op, arg)
        if rep and rep[1] == c.MAXREPEAT:
            return True
        if any(_unbounded(child) for child in _children(op, arg)):
            return True
    return False


def _first(items: Any) -> frozenset[int] | None:
    """The characters a parsed regex can start with; None when wide or unknown (., \\w, x*)."""
    for op, arg in items:
        if op is c.LITERAL:
            return frozenset({arg})
        if op is c.IN:
            chars: set[int] = set()
            for kind, value in arg:
                if kind is c.LITERAL:
                    chars.add(value)
                elif kind is c.RANGE and value[1] - value[0] < 256:
                    chars.update(range(value[0], value[1] + 1))
                else:
                    return None
            return frozenset(chars)
        if op is c.SUBPATTERN:
            return _first(arg[3])
        if op is c.BRANCH:
            firsts = [_first(b) for b in arg[1]]
            if any(f is None for f in firsts):
                return None
            return frozenset().union(*(f for f in firsts if f is not None))
        rep = _repeat(op, arg)
        if rep and rep[0] > 0:
            return _first(rep[2])
        if op in (c.AT,):
            continue
        return None
    return frozenset()


def _overlap(a: frozenset[int] | None, b: frozenset[int] | None) -> bool:
    return a is None or b is None or bool(a & b)


def _ambiguous(items: Any) -> bool:
    """Alternatives in a repeated body that can match alike. sre rewrites what it reads: (a|a)
    becomes a then (?:|) (two empty alternatives), and (a|b) a class, so [aa] is checked too."""
    for op, arg in items:
        if op is c.BRANCH:
            firsts = [_first(b) if len(b) else frozenset() for b in arg[1]]
            empties = sum(1 for b in arg[1] if not len(b))
            if empties > 1:
                return True
            for i, a in enumerate(firsts):
                if a and any(b and _overlap(a, b) for b in firsts[i + 1 :]):
                    return True
                if a is None and any(b is None or b for b in firsts[i + 1 :]):
                    return True
        elif op is c.IN:
            literals = [v for k, v in arg if k is c.LITERAL]
            if len(literals) != len(set(literals)):
                return True
        elif op is c.SUBPATTERN and _ambiguous(arg[3]):
            return True
    return False


def _backtracks(items: Any) -> str:
    """Why a backtracking engine can take super-linear time on this parsed regex ('' if not):
    an unbounded repeat of something that repeats without bound ((a+)+, (\\w+\\s?)*); an
    unbounded repeat of alternatives that can start alike ((a|a)*); three or more unbounded
    repeats in a row that can match the same characters (\\w*\\w*\\w*); a group containing an
    unbounded repeat, itself repeated more than 3 times ((.*a){12})."""
    run: list[frozenset[int] | None] = []
    for op, arg in items:
        rep = _repeat(op, arg)
        if rep:
            _, high, body = rep
            if high == c.MAXREPEAT and _unbounded(body):
                return "nests unbounded repetition (like (a+)+)"
            if high == c.MAXREPEAT and _ambiguous(body):
                return "repeats alternatives that can match the same text (like (a|a)*)"
            elif high > 3 and _unbounded(body):
                return "repeats a group holding an unbounded repeat many times (like (.*a){12})"
            if high == c.MAXREPEAT:
                start = _first(body)
                run = [f for f in run if _overlap(f, start)] + [start]
                if len(run) >= 3:
                    return "chains unbounded repeats that can match the same text (like \\w*\\w*\\w*)"
            else:
                run = []
        else:
            run = []
        for child in _children(op, arg):
            why = _backtracks(child)
            if why:
                return why
    return ""


def _catastrophic(items: Any) -> bool:
    """Whether a parsed regex can take a backtracking engine super-linear time (see _backtracks)."""
    return bool(_backtracks(items))


# Policies of one org tend to share their masking patterns (email, card numbers), and the answer
# depends on the pattern alone: parsing and walking each again cost ~0.1 ms a policy.
@functools.lru_cache(maxsize=512)
def check_pattern(pattern: str) -> str:
    """Why a PII pattern is refused ('' when it is fine)."""
    try:
        compile_pattern(pattern)
    except ValueError as exc:
        return f"does not compile on the linear-time regex engine (RE2) masking runs on: {exc}"
    try:
        parsed = p.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"does not compile: {exc}"
    why = _backtracks(parsed)
    if why:
        return f"{why}: a backtracking engine can take exponential time (or high polynomial time) on it"
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


def relies_on_builtin_pii(policy: ContextPolicy) -> bool:
    """A policy that must not retain PII and names no masking rules of its own: only the
    built-in detectors (email, card number, phone, postal code) mask its conversations."""
    return not policy.spec.retention.retain_user_pii and not policy.spec.pii_masking


def notes(manifests: ManifestSet) -> list[Problem]:
    """Things worth telling an author that are not errors (``validate`` prints them as notes)."""
    found: list[Problem] = []
    for loaded in manifests.manifests:
        if isinstance(loaded.manifest, ContextPolicy) and relies_on_builtin_pii(loaded.manifest):
            _Checker(loaded, found).add(
                "spec.retention.retainUserPii",
                "note: no piiMasking rules, so only the built-in detectors (email, card number, "
                "phone, postal code) mask PII; add rules for anything else (names, account ids)",
            )
    return found


def check_live(
    desired: Sequence[FunctionDefinition | Prompt | ContextPolicy],
    models: Mapping[str, int],
    flows: Mapping[str, Mapping[str, str]],
    capacities: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Rules that need the live org: known models (prompts and policies), a policy's hardLimit
    within its model's max_tokens, a known flowId, and attributeMappings naming inputs the flow
    declares with the same dataType. ``models`` maps model id -> max_tokens; ``flows`` maps flow
    id -> {input name: dataType}; ``capacities`` (model id -> its capacity document), when given,
    adds ``check_capacity``. Each message names the resource, the field and the value."""
    problems: list[str] = []
    for manifest in desired:
        key = key_of(manifest)
        if not isinstance(manifest, Prompt | ContextPolicy):
            continue
        model_id = manifest.spec.model_id
        if model_id not in models:
            known = ", ".join(sorted(models)) or "none"
            problems.append(
                f"{key}: spec.modelId {model_id!r} is not a model of the live org (known: {known})"
            )
        if not isinstance(manifest, ContextPolicy):
            continue
        spec = manifest.spec
        limit = models.get(model_id)
        if limit is not None and spec.token_limits.hard_limit > limit:
            problems.append(
                f"{key}: spec.tokenLimits.hardLimit {spec.token_limits.hard_limit} is above "
                f"model {model_id!r} max_tokens {limit}"
            )
        if spec.flow_id is None:
            continue
        inputs = flows.get(spec.flow_id)
        if inputs is None:
            problems.append(f"{key}: spec.flowId {spec.flow_id!r} is not a flow of the live org")
            continue
        for i, mapping in enumerate(spec.attribute_mappings):
            declared = inputs.get(mapping.attribute)
            where = f"{key}: spec.attributeMappings[{i}]"
            if declared is None:
                names = ", ".join(sorted(inputs)) or "none"
                problems.append(
                    f"{where}.attribute {mapping.attribute!r} is not an input of flow "
                    f"{spec.flow_id!r} (inputs: {names})"
                )
            elif declared != mapping.data_type:
                problems.append(
                    f"{where}.dataType {mapping.data_type!r} does not match flow "
                    f"{spec.flow_id!r} input {mapping.attribute!r} of dataType {declared!r}"
                )
    return problems + check_capacity(desired, capacities or {})


def check_capacity(
    desired: Sequence[FunctionDefinition | Prompt | ContextPolicy],
    capacities: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Rules on a model's capacity (``GET /api/v2/ai/llm/models/{id}/capacity``, keyed by model
    id; models not in ``capacities`` are not checked here): a policy that sets
    autoCompactThreshold on a model without compaction, a policy format the model does not
    support, a prompt with more context rules (context windows) than the model's
    max_context_windows. Each message names the resource, the field and the value."""
    problems: list[str] = []
    for manifest in desired:
        key = f"{manifest.kind}/{manifest.metadata.name}"
        if isinstance(manifest, FunctionDefinition):
            continue
        model_id = manifest.spec.model_id
        capacity = capacities.get(model_id)
        if capacity is None:
            continue
        if isinstance(manifest, ContextPolicy):
            spec = manifest.spec
            threshold = spec.retention.auto_compact_threshold
            if threshold is not None and capacity.get("compaction_enabled") is False:
                problems.append(
                    f"{key}: spec.retention.autoCompactThreshold {threshold} asks for compaction, "
                    f"which model {model_id!r} does not do (compaction_enabled: false)"
                )
            formats = capacity.get("supported_formats")
            if isinstance(formats, list) and spec.format not in formats:
                problems.append(
                    f"{key}: spec.format {spec.format!r} is not supported by model {model_id!r} "
                    f"(supported_formats: {', '.join(str(f) for f in formats) or 'none'})"
                )
        else:
            windows = capacity.get("max_context_windows")
            rules = len(manifest.spec.context_rules)
            if isinstance(windows, int) and not isinstance(windows, bool) and rules > windows:
                problems.append(
                    f"{key}: spec.contextRules has {rules} context rules; model {model_id!r} "
                    f"takes at most {windows} context windows (max_context_windows)"
                )
    return problems


def check_alone(loaded: LoadedManifest) -> list[Problem]:
    """Every offline rule that looks at one manifest only; its problems depend on nothing but
    the manifest's file, so the per-file cache can keep them."""
    problems: list[Problem] = []
    checker = _Checker(loaded, problems)
    match loaded.manifest:
        case FunctionDefinition() as fn:
            check_function(checker, fn)
        case Prompt() as prompt:
            check_prompt_alone(checker, prompt)
        case ContextPolicy() as policy:
            check_policy(checker, policy)
    return problems


def _with_references(
    manifests: ManifestSet, alone: Sequence[Sequence[Problem]], problems: list[Problem]
) -> list[Problem]:
    """``alone`` (the problems of each manifest on its own), each followed by the manifest's
    reference problems, in the order ``check`` has always reported them."""
    known: dict[ResourceKey, LoadedManifest | None] = {
        **dict.fromkeys(manifests.invalid),
        **manifests.by_key(),
    }
    for loaded, own in zip(manifests.manifests, alone, strict=True):
        problems.extend(own)
        if isinstance(loaded.manifest, Prompt):
            check_references(_Checker(loaded, problems), loaded.manifest, known)
    return problems


def check(manifests: ManifestSet) -> list[Problem]:
    """Every offline rule over a loaded set; an empty list means valid."""
    return _with_references(manifests, [check_alone(m) for m in manifests.manifests], [])


def validate_manifests(
    paths: Sequence[Path], variables: Mapping[str, str] | None = None, *, cache_dir: Path | None = None
) -> ManifestSet:
    """Load and check; raises ManifestError with every problem from both steps.

    With ``cache_dir``, a file whose content (and variables, and tool version) was loaded and
    checked before is not parsed again: its manifests and its own problems come from the cache
    (see ``loader.load_checked``). The rules across files (duplicates, references) run every time.
    """
    return finish(validate_manifests_steps(paths, variables, cache_dir=cache_dir))


def validate_manifests_steps(
    paths: Sequence[Path], variables: Mapping[str, str] | None = None, *, cache_dir: Path | None = None
) -> Steps[ManifestSet]:
    """``validate_manifests`` in steps, one file at a time (see ``loader.Steps``)."""
    # Rules run on whatever loaded, so one run reports load and rule problems together.
    manifests, problems, alone = yield from load_checked_steps(paths, variables, check_alone, cache_dir)
    _with_references(manifests, alone, problems)
    if problems:
        raise ManifestError(problems)
    return manifests
