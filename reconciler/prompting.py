"""The effective prompt, as the LLM Gateway would build it for one conversation.

Pure: values in, values out; no I/O, no network (the CLI and the plan's previews read the files
and fetch live data); the one clock read is the wall-clock budget of a render. The steps, each a
function, composed by ``build_prompt``:

1. ``flatten_conversation``: conversation metadata (id, channel, state, queue, agent, customer)
   and the message history, oldest first by its ISO-8601 timestamps. The platform's own shape
   (participants with ``purpose``, ``queueName``, media lists) is read first, the documents'
   shape (``type``, ``role``, ``routing.queue``) second, with the documents' defaults.
2. ``coerce_attributes``: each attribute typed by the flow's input definitions (keys the flow
   does not declare are ignored, as the flow ignores them; ``inspect_attributes`` reports them).
3. ``apply_policy``: PII masked unless the policy retains it (its own rules, then the built-in
   detectors), metadata cut to the policy's fields, history compacted (models with compaction)
   or evicted to the budget: the soft limit and the conversation_history rule's maxTokens.
4. ``render_template``: Jinja2 in a bounded sandbox (output size, range size, loop iterations
   and calls, integer size, wall clock), where a missing variable is an error naming it.
5. ``count_tokens``: the token table against the rules' budgets and the policy's limits.

Tokens are estimated as the service does (``rules.estimate_tokens``). Every problem with the
input is a ``RenderError`` (never a traceback): the CLI prints it, ``preview`` returns it as text.
PII patterns run on RE2 (linear time), so no pattern can hang a preview.
"""

from __future__ import annotations

import difflib
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from reconciler.errors import RenderError
from reconciler.models import ContextPolicy, ContextPolicySpec, Prompt, PromptSpec
from reconciler.rules import (
    MAX_INT_BITS,
    MAX_LOOP_ITERATIONS,
    MAX_RANGE,
    MAX_TEMPLATE_OUTPUT,
    RENDER_SECONDS,
    compile_pattern,
    estimate_tokens,
    template_variables,
)

HISTORY_SOURCE = "conversation_history"
# The marker replacing evicted turns under the summarize policy; the preview cannot summarize
# (that is the model's job), so it shows where the summary goes and how much it stands for.
SUMMARY_MARK = "[summary of {n} earlier {messages} omitted]"
COMPACTION_MARK = "[compacted: {n} earlier {messages}]"
# Document 004's defaults: soft limit at 90% of the hard limit, compaction at 85% of the budget.
SOFT_LIMIT_RATIO = 0.9
AUTO_COMPACT_THRESHOLD = 0.85
# Masking applied whenever PII must not be retained, after the policy's own rules. Written for
# RE2 (no lookaround); dates (2026-10-01) and amounts (49.99) match none of them.
BUILTIN_PII: tuple[tuple[str, str, str], ...] = (
    ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "[EMAIL]"),
    ("card number", r"\b\d(?:[ -]?\d){12,18}\b", "[CARD]"),
    (
        "phone",
        r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}\b"
        r"|\(?\b\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b",
        "[PHONE]",
    ),
    # A bare five-digit number is as often an order number as a ZIP code: ZIP codes are taken
    # after a state code (IL 62704) or as ZIP+4; UK postcodes by their own shape (SW1A 1AA).
    (
        "postal code",
        r"\b[A-Z]{2},? \d{5}(?:-\d{4})?\b|\b\d{5}-\d{4}\b|\b[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}\b",
        "[POSTAL_CODE]",
    ),
)

# Plain decimal notation only: float() would also take "nan", "inf" and "1_000".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})

Message = dict[str, str]  # {"from", "text", "timestamp"}: what templates see as `messages`


def history_tokens(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(m["text"]) for m in messages)


def _plural(n: int) -> str:
    return "message" if n == 1 else "messages"


def summary_text(dropped: int) -> str:
    return SUMMARY_MARK.format(n=dropped, messages=_plural(dropped))


def compaction_text(compacted: int) -> str:
    return COMPACTION_MARK.format(n=compacted, messages=_plural(compacted))


# --- 1. the conversation -------------------------------------------------------------------------

# The platform names a participant's part `purpose`; the documents name it `role`.
_AGENT_PURPOSES = frozenset({"agent", "user"})
_CUSTOMER_PURPOSES = frozenset({"customer", "external"})
# The platform has no conversation-level channel: each participant carries lists per media type.
_MEDIA = (
    ("calls", "voice"),
    ("callbacks", "callback"),
    ("chats", "chat"),
    ("messages", "message"),
    ("emails", "email"),
    ("videos", "video"),
    ("socialExpressions", "social"),
    ("screenshares", "screenshare"),
    ("cobrowsesessions", "cobrowse"),
)


def _role(participant: Mapping[str, Any]) -> str:
    """agent, customer, or the participant's own purpose/role (acd, ivr, ...); '' if none."""
    for key in ("purpose", "role"):
        value = participant.get(key)
        if isinstance(value, str) and value:
            if value in _AGENT_PURPOSES:
                return "agent"
            if value in _CUSTOMER_PURPOSES:
                return "customer"
            return value
    return ""


def _participant(participants: Sequence[Mapping[str, Any]], role: str) -> str:
    """The name of the first participant in ``role``; 'Anonymous' when it has none; '' when
    nobody has that role."""
    for p in participants:
        if _role(p) == role:
            name = p.get("name")
            return str(name) if isinstance(name, str) and name else "Anonymous"
    return ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _channel(conversation: Mapping[str, Any], participants: Sequence[Mapping[str, Any]]) -> str:
    for p in participants:
        for key, channel in _MEDIA:
            if isinstance(p.get(key), list) and p[key]:
                return channel
    return _text(conversation.get("type")) or _text(conversation.get("channel")) or "unknown"


def _queue(routing: Mapping[str, Any], participants: Sequence[Mapping[str, Any]]) -> str:
    """The queue's name: an ACD participant's queueName, else routing.queue.name; 'Unknown
    Queue' when a queue is named by id only; '' when the conversation was not queued."""
    for p in participants:
        if _text(p.get("queueName")):
            return str(p["queueName"])
    queue = routing.get("queue")
    if isinstance(queue, Mapping) and queue:
        return _text(queue.get("name")) or "Unknown Queue"
    if any(_text(p.get("queueId")) for p in participants):
        return "Unknown Queue"
    return ""


def _instant(index: int, value: Any) -> datetime:
    """A message's timestamp as an aware datetime (naive ones read as UTC) for ordering."""
    if not isinstance(value, str) or not value:
        raise RenderError(f"conversation: messages[{index}] has no timestamp (expected ISO-8601)")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise RenderError(
            f"conversation: messages[{index}].timestamp {value!r} is not an ISO-8601 timestamp"
        ) from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def flatten_conversation(conversation: Any) -> tuple[dict[str, str], list[Message]]:
    """The conversation's metadata fields and its message history, oldest first.

    ``conversation`` has the shape of ``GET /api/v2/conversations/{id}``: the platform's
    (participants with ``purpose``, ``name``, ``queueName``, media lists) or the documents'
    (``type``, participants with ``role``, ``routing.queue``), or today's samples (``channel``).
    Defaults as the documents give them: channel and state ``unknown``, a queue without a name
    ``Unknown Queue``, a participant without a name ``Anonymous``. A message ``from`` naming a
    participant's id reads as that participant's role.
    """
    if not isinstance(conversation, Mapping):
        raise RenderError(f"conversation: expected a JSON object, got {type(conversation).__name__}")
    participants = conversation.get("participants") or []
    raw_messages = conversation.get("messages") or []
    routing = conversation.get("routing") or {}
    if not isinstance(participants, list):
        raise RenderError("conversation: participants must be a list")
    if not isinstance(raw_messages, list):
        raise RenderError("conversation: messages must be a list")
    if not isinstance(routing, Mapping):
        raise RenderError("conversation: routing must be an object")
    for index, p in enumerate(participants):
        if not isinstance(p, Mapping):
            raise RenderError(f"conversation: participants[{index}] must be an object")
    metadata = {
        "conversationId": str(conversation.get("id") or ""),
        "channel": _channel(conversation, participants),
        "state": _text(conversation.get("state")) or "unknown",
        "queue": _queue(routing, participants),
        "agent": _participant(participants, "agent"),
        "customer": _participant(participants, "customer"),
    }
    roles = {str(p["id"]): _role(p) for p in participants if p.get("id") and _role(p)}
    dated: list[tuple[datetime, int, Message]] = []
    for index, m in enumerate(raw_messages):
        if not isinstance(m, Mapping):
            raise RenderError(f"conversation: messages[{index}] must be an object")
        instant = _instant(index, m.get("timestamp"))
        sender = str(m.get("from") or "")
        message = {
            "from": roles.get(sender, sender),
            "text": str(m.get("text") or ""),
            "timestamp": str(m["timestamp"]),
        }
        dated.append((instant, index, message))
    dated.sort(key=lambda item: (item[0], item[1]))  # the index keeps equal instants in file order
    return metadata, [message for _, _, message in dated]


# --- 2. attributes -------------------------------------------------------------------------------


def coerce(name: str, value: Any, data_type: str) -> str | int | float | bool:
    """One attribute value as its flow input's data type; dates become ISO-8601 strings."""

    def fail(expected: str) -> RenderError:
        return RenderError(f"attribute {name!r}: {value!r} is not a valid {data_type} ({expected})")

    if data_type == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        raise fail("expected text")
    if data_type == "number":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise fail("expected a number such as 120.50")
        text = str(value).strip()
        if not _NUMBER.fullmatch(text):
            raise fail("expected a number such as 120.50")
        if text.lstrip("+-").isdigit():
            return int(text)
        number = float(text)
        if not math.isfinite(number):
            raise fail("expected a finite number")
        return number
    if data_type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str | int) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise fail("expected true or false")
    if data_type == "date":
        if not isinstance(value, str):
            raise fail("expected an ISO-8601 date such as 2026-10-01")
        text = value.strip()
        try:
            if len(text) == 10:
                return date.fromisoformat(text).isoformat()
            return datetime.fromisoformat(text).isoformat()
        except ValueError:
            raise fail("expected an ISO-8601 date such as 2026-10-01") from None
    raise RenderError(f"attribute {name!r}: unknown data type {data_type!r}")


def coerce_attributes(raw: Any, inputs: Mapping[str, str]) -> dict[str, Any]:
    """Each attribute the flow declares, typed by its input definition; every problem reported
    at once. Keys the flow does not declare are left out: the flow ignores them (document 003),
    and ``undeclared_attributes`` / ``inspect_attributes`` say which they were."""
    if not isinstance(raw, Mapping):
        raise RenderError(f"attributes: expected a JSON object of name: value, got {type(raw).__name__}")
    typed: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in raw.items():
        if name not in inputs:
            continue
        try:
            typed[name] = coerce(name, value, inputs[name])
        except RenderError as exc:
            problems.append(str(exc))
    if problems:
        raise RenderError("; ".join(problems))
    return typed


def undeclared_attributes(raw: Any, inputs: Mapping[str, str]) -> tuple[str, ...]:
    """The attribute names the flow does not declare (ignored by it, and by the preview)."""
    return tuple(str(k) for k in raw if k not in inputs) if isinstance(raw, Mapping) else ()


def _json_type(value: Any) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case _:
            return "object"


@dataclass(frozen=True)
class AttributeCheck:
    """One attribute against the flow input of the same name."""

    name: str
    value: Any
    expected: str  # the flow's dataType, or "undeclared"
    actual: str  # the JSON type of the value
    status: str  # OK, MISMATCH, or IGNORED (not a flow input)
    detail: str = ""


@dataclass(frozen=True)
class AttributeReport:
    """Document 003's attribute inspector: declared flow inputs against a payload."""

    inputs: Mapping[str, str]
    checks: tuple[AttributeCheck, ...]
    missing: tuple[str, ...]  # declared inputs the payload lacks (warning)
    extra: tuple[str, ...]  # payload keys the flow does not declare (note: ignored)

    @property
    def mismatches(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.checks if c.status == "MISMATCH")

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": dict(self.inputs),
            "missing": list(self.missing),
            "extra": list(self.extra),
            "attributes": [
                {
                    "name": c.name,
                    "value": c.value,
                    "expected": c.expected,
                    "actual": c.actual,
                    "status": c.status,
                    **({"detail": c.detail} if c.detail else {}),
                }
                for c in self.checks
            ],
            "ok": not self.mismatches,
        }

    def to_text(self, title: str) -> str:
        lines = [
            f"=== Attribute inspector: {title} ===",
            f"Flow inputs: {', '.join(f'{k} ({v})' for k, v in self.inputs.items()) or 'none'}",
            f"Payload keys: {', '.join(c.name for c in self.checks) or 'none'}",
        ]
        if self.missing:
            lines.append(f"WARNING: missing flow inputs: {', '.join(self.missing)}")
        if self.extra:
            lines.append(f"NOTE: extra attributes (ignored by the flow): {', '.join(self.extra)}")
        for c in self.checks:
            detail = f" ({c.detail})" if c.detail else ""
            lines.append(
                f"  {c.name}: {_short(c.value)} (expected: {c.expected}, actual: {c.actual})"
                f" -> {c.status}{detail}"
            )
        lines.append(
            f"{len(self.checks) - len(self.extra) - len(self.mismatches)} OK, "
            f"{len(self.mismatches)} MISMATCH, {len(self.missing)} missing, {len(self.extra)} ignored"
        )
        return "\n".join(lines)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_matches(value: Any, data_type: str) -> bool:
    actual = _json_type(value)
    if data_type == "date":
        if actual != "string":
            return False
        try:
            coerce("", value, "date")
        except RenderError:
            return False
        return True
    return actual == data_type


def inspect_attributes(raw: Any, inputs: Mapping[str, str]) -> AttributeReport:
    """Each payload key against the flow's declared inputs: OK when its JSON type is the
    declared dataType (a date: an ISO-8601 string), MISMATCH otherwise (the detail says whether
    the preview can still coerce it); undeclared keys IGNORED; declared inputs absent, missing."""
    if not isinstance(raw, Mapping):
        raise RenderError(f"attributes: expected a JSON object of name: value, got {type(raw).__name__}")
    checks = []
    for key, value in raw.items():
        name = str(key)
        actual = _json_type(value)
        if name not in inputs:
            checks.append(AttributeCheck(name, value, "undeclared", actual, "IGNORED"))
            continue
        expected = inputs[name]
        if _type_matches(value, expected):
            checks.append(AttributeCheck(name, value, expected, actual, "OK"))
            continue
        try:
            typed = coerce(name, value, expected)
            detail = f"the preview coerces it to {typed!r}; the flow compares types strictly"
        except RenderError as exc:
            detail = str(exc)
        checks.append(AttributeCheck(name, value, expected, actual, "MISMATCH", detail))
    missing = tuple(name for name in inputs if name not in raw)
    return AttributeReport(dict(inputs), tuple(checks), missing, undeclared_attributes(raw, inputs))


# --- 3. the context policy -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCapacity:
    """``GET /api/v2/ai/llm/models/{modelId}/capacity``."""

    model_id: str
    max_tokens: int
    max_context_windows: int | None = None
    supported_formats: tuple[str, ...] = ()
    compaction_enabled: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "max_tokens": self.max_tokens,
            "max_context_windows": self.max_context_windows,
            "supported_formats": list(self.supported_formats),
            "compaction_enabled": self.compaction_enabled,
        }


def model_capacity_from(data: Any, where: str = "model capacity") -> ModelCapacity:
    """A capacity body (or a model listing entry) checked field by field."""
    if not isinstance(data, Mapping):
        raise RenderError(f"{where}: expected a JSON object with model_id and max_tokens")
    model_id = data.get("model_id", data.get("id"))
    max_tokens = data.get("max_tokens")
    windows = data.get("max_context_windows")
    formats = data.get("supported_formats", [])
    compaction = data.get("compaction_enabled", False)
    if not isinstance(model_id, str) or not model_id:
        raise RenderError(f"{where}: model_id must be a non-empty string")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise RenderError(f"{where}: max_tokens must be a positive integer")
    if windows is not None and (not isinstance(windows, int) or isinstance(windows, bool)):
        raise RenderError(f"{where}: max_context_windows must be an integer")
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
        raise RenderError(f"{where}: supported_formats must be a list of strings")
    if not isinstance(compaction, bool):
        raise RenderError(f"{where}: compaction_enabled must be true or false")
    return ModelCapacity(model_id, max_tokens, windows, tuple(formats), compaction)


Rule = tuple[Any, str]  # (an RE2 pattern, its literal replacement)


def compile_rules(policy: ContextPolicySpec | None) -> list[Rule]:
    """The policy's own masking rules, then the built-in detectors, compiled by RE2."""
    rules: list[Rule] = []
    for rule in policy.pii_masking if policy else []:
        try:
            rules.append((compile_pattern(rule.pattern), rule.replacement))
        except ValueError as exc:
            raise RenderError(
                f"piiMasking rule {rule.name!r}: pattern does not compile on RE2, the linear-time "
                f"engine masking runs on ({exc})"
            ) from None
    rules += [(compile_pattern(pattern), replacement) for _, pattern, replacement in BUILTIN_PII]
    return rules


def mask(text: str, rules: Sequence[Rule]) -> tuple[str, int]:
    """``text`` with every rule applied in order, and how many replacements were made."""
    count = 0
    for pattern, replacement in rules:
        # A function as the replacement: the text is literal, never read for group references.
        text, n = pattern.subn(lambda _match, literal=replacement: literal, text)
        count += n
    return text, count


def soft_limit(policy: ContextPolicySpec) -> int:
    """softLimit, else floor(hardLimit * softLimitRatio), else 90% of the hard limit."""
    limits = policy.token_limits
    if limits.soft_limit is not None:
        return limits.soft_limit
    ratio = limits.soft_limit_ratio if limits.soft_limit_ratio is not None else SOFT_LIMIT_RATIO
    return math.floor(limits.hard_limit * ratio)


def history_budget(prompt: PromptSpec, policy: ContextPolicySpec | None) -> int | None:
    """The history's token budget: the soft limit and every conversation_history rule's
    maxTokens, whichever is least; None when neither exists."""
    budgets = [r.max_tokens for r in prompt.context_rules if r.source == HISTORY_SOURCE]
    if policy is not None:
        budgets.append(soft_limit(policy))
    return min(budgets) if budgets else None


def compaction_threshold(policy: ContextPolicySpec | None, capacity: ModelCapacity | None) -> float | None:
    """The share of the budget at which history is compacted: None unless the model compacts."""
    if policy is None or capacity is None or not capacity.compaction_enabled:
        return None
    threshold = policy.retention.auto_compact_threshold
    return threshold if threshold is not None else AUTO_COMPACT_THRESHOLD


def trim_history(
    messages: Sequence[Message],
    budget: int,
    eviction: str,
    persist_system: bool,
    marker: Callable[[int], str] | None = None,
) -> tuple[list[Message], int]:
    """The history cut to ``budget`` tokens, and how many messages were dropped.

    lru and fifo both drop the oldest turns first (a transcript records no reads to rank by);
    summarize does the same and puts one marked placeholder where the dropped turns were, its
    own tokens counted in the budget (``marker`` overrides the placeholder's text: compaction
    uses its own). System messages are never dropped when persisted, so the result can stay
    over budget: the token table flags that.
    """
    droppable = [i for i, m in enumerate(messages) if not (persist_system and m["from"] == "system")]
    placeholder = marker or (summary_text if eviction == "summarize" else None)

    def size(dropped: int) -> int:
        gone = set(droppable[:dropped])
        kept = history_tokens([m for i, m in enumerate(messages) if i not in gone])
        return kept + (estimate_tokens(placeholder(dropped)) if placeholder and dropped else 0)

    dropped = 0
    while dropped < len(droppable) and size(dropped) > budget:
        dropped += 1
    if not dropped:
        return list(messages), 0
    gone = set(droppable[:dropped])
    kept = [m for i, m in enumerate(messages) if i not in gone]
    if placeholder:
        first = droppable[0]
        at = sum(1 for i in range(first) if i not in gone)
        last = messages[droppable[dropped - 1]]
        kept.insert(at, {"from": "system", "text": placeholder(dropped), "timestamp": last["timestamp"]})
    return kept, dropped


@dataclass(frozen=True)
class Context:
    """What the policy lets into the prompt."""

    metadata: Mapping[str, str]
    attributes: Mapping[str, Any]
    messages: tuple[Message, ...]
    masked: int
    dropped: int
    budget: int | None  # the history's token budget, None without a policy or history rule
    compacted: int = 0  # of ``dropped``, how many were compacted (the model compacts)
    compaction: str = "unknown"  # enabled, disabled (the model does not compact), unknown


def apply_policy(
    policy: ContextPolicySpec | None,
    metadata: Mapping[str, str],
    attributes: Mapping[str, Any],
    messages: Sequence[Message],
    inputs: Mapping[str, str] | None = None,
    *,
    budget: int | None = None,
    capacity: ModelCapacity | None = None,
) -> Context:
    """Mask PII, keep the policy's metadata fields, fit the history to ``budget``.

    PII is masked unless the policy retains it (with no policy, the service's default applies:
    not retained), by the policy's rules then the built-in detectors. Only text is masked:
    message texts, metadata, and attributes the flow types as strings (a date such as
    2026-10-01 would otherwise match a pattern). ``budget`` defaults to the soft limit. On a
    model that compacts (``capacity.compaction_enabled``), history over autoCompactThreshold of
    the budget is compacted to it, oldest turns first, into one marked placeholder; otherwise
    the eviction policy drops turns until the history fits the budget.
    """
    masked = 0
    meta, attrs, history = dict(metadata), dict(attributes), [dict(m) for m in messages]
    if policy is None or not policy.retention.retain_user_pii:
        rules = compile_rules(policy)
        for m in history:
            m["text"], n = mask(m["text"], rules)
            masked += n
        for key, value in meta.items():
            meta[key], n = mask(value, rules)
            masked += n
        for key, value in attrs.items():
            if isinstance(value, str) and (inputs or {}).get(key, "string") == "string":
                attrs[key], n = mask(value, rules)
                masked += n
    if policy is not None and policy.metadata_fields:
        meta = {k: v for k, v in meta.items() if k in policy.metadata_fields}
    if budget is None and policy is not None:
        budget = soft_limit(policy)
    compaction = "unknown" if capacity is None else "enabled" if capacity.compaction_enabled else "disabled"
    if budget is None:
        return Context(meta, attrs, tuple(history), masked, 0, None, 0, compaction)
    persist = policy.retention.persist_system_prompts if policy else True
    eviction = policy.retention.eviction_policy if policy else "lru"
    threshold = compaction_threshold(policy, capacity)
    if threshold is not None and history_tokens(history) > threshold * budget:
        trimmed, dropped = trim_history(
            history, math.floor(threshold * budget), eviction, persist, marker=compaction_text
        )
        return Context(meta, attrs, tuple(trimmed), masked, dropped, budget, dropped, compaction)
    trimmed, dropped = trim_history(history, budget, eviction, persist)
    return Context(meta, attrs, tuple(trimmed), masked, dropped, budget, 0, compaction)


# --- 4. the template -----------------------------------------------------------------------------


def choose_template(prompt: PromptSpec, variant: str | None) -> str:
    if variant is None:
        return prompt.template
    for v in prompt.variants:
        if v.name == variant:
            return v.template
    known = ", ".join(v.name for v in prompt.variants) or "none"
    raise RenderError(f"no variant {variant!r} in this prompt (variants: {known})")


def uses_messages(template: str) -> bool:
    """Whether the template writes the history itself (else the gateway injects it by rule)."""
    try:
        return "messages" in template_variables(template)
    except jinja2.TemplateSyntaxError:
        return False


class TemplateLimitError(Exception):
    """A render went past a preview bound (raised inside Jinja; ``render_template`` turns it
    into a RenderError naming the prompt)."""


_LIMITS = (
    f"previews allow {MAX_TEMPLATE_OUTPUT:,} characters of output, ranges of {MAX_RANGE:,}, "
    f"{MAX_LOOP_ITERATIONS:,} loop iterations and calls, numbers of {MAX_INT_BITS:,} bits and "
    f"{RENDER_SECONDS:g} s"
)
# Filters whose integer arguments are widths or counts (center(300000000), slice(10**9)).
_WIDTH_FILTERS = frozenset({"center", "indent", "slice", "batch", "wordwrap", "truncate"})
# str methods whose integer arguments are widths.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
# Field widths and precisions inside a format string: "%999999999d", "{:>999999999}".
_FORMAT_NUMBER = re.compile(r"(?:%[#0 +-]*|\{[^{}]*:[^{}]*?)(\d+)(?:\.(\d+))?|\.(\d+)")
_LOOP, _OUT, _CONCAT = "reconciler_loop", "reconciler_out", "reconciler_concat"


@dataclass
class _Budget:
    """What one render may still spend. Mutable on purpose: one per render, never shared."""

    deadline: float
    steps: int = 0
    produced: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"ran longer than {RENDER_SECONDS:g} s")

    def step(self, what: str) -> None:
        self.steps += 1
        if self.steps > MAX_LOOP_ITERATIONS:
            raise TemplateLimitError(f"made more than {MAX_LOOP_ITERATIONS:,} {what}")
        if self.steps % 64 == 0:
            self.clock()

    def output(self, size: int) -> None:
        self.produced += size
        if self.produced > MAX_TEMPLATE_OUTPUT:
            raise TemplateLimitError(f"produced more than {MAX_TEMPLATE_OUTPUT:,} characters")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict | set | frozenset) else 0


def _check_value(value: Any, what: str) -> Any:
    if _size(value) > MAX_TEMPLATE_OUTPUT:
        raise TemplateLimitError(f"{what} made a value of {_size(value):,} items or characters")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError(f"{what} made a number of {value.bit_length():,} bits")
    return value


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_RANGE:
        raise TemplateLimitError(f"{what} was given a width or count of {value:,}")


def _check_format(fmt: str, args: Sequence[Any], what: str) -> None:
    for match in _FORMAT_NUMBER.finditer(fmt):
        for group in match.groups():
            if group and len(group) > 5 and int(group) > MAX_RANGE:
                raise TemplateLimitError(f"{what} asks for a field of {int(group):,} characters")
    if "*" in fmt or ":{" in fmt:  # widths taken from the arguments
        for arg in args:
            _check_width(arg, what)


def _strings_size(items: Any) -> int:
    if not isinstance(items, list | tuple):
        return 0
    return sum(len(i) if isinstance(i, str) else 32 for i in items)


def _check_replace(text: Any, old: Any, new: Any, what: str) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = len(text) + 1 if old == "" else text.count(old)
        size = len(text) + hits * (len(new) - len(old))
        if size > MAX_TEMPLATE_OUTPUT:
            raise TemplateLimitError(f"{what} would make {size:,} characters")


class _Bounds(NodeTransformer):
    """Routes every loop, every output and every ``~`` of a parsed template through the
    budget's filters: the sandbox hooks see calls, attributes and operators, but not these."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [nodes.Filter(n, _OUT, [], [], None, None, lineno=n.lineno) for n in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        joined = nodes.List(list(node.nodes), lineno=node.lineno)
        return nodes.Filter(joined, _CONCAT, [], [], None, None, lineno=node.lineno)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's sandbox (immutable: no list.append / dict.update doubling a value) with the
    preview bounds of ``rules``: the size of every value and of all output, range() size,
    loop iterations and calls, integer size, and wall clock. One per render."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})

    def __init__(self, seconds: float = RENDER_SECONDS) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.budget = _Budget(time.monotonic() + seconds)
        self.globals["range"] = self._range
        self.globals.pop("lipsum", None)  # lorem ipsum by the megabyte has no place in a prompt
        self.filters = {name: self._guarded(name, f) for name, f in self.filters.items()}
        # pass_context: Jinja's optimizer never runs them at compile time (they count at run time).
        self.filters[_LOOP] = jinja2.pass_context(lambda _c, iterable: self._loop(iterable))
        self.filters[_OUT] = jinja2.pass_context(lambda _c, value: self._out(value))
        self.filters[_CONCAT] = jinja2.pass_context(lambda _c, parts: self._concat(parts))

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        bounded = _Bounds().visit(tree)
        assert isinstance(bounded, nodes.Template)
        bounded.set_environment(self)
        return bounded

    # -- hooks ------------------------------------------------------------------------------

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        if len(numbers) > MAX_RANGE:
            raise TemplateLimitError(f"asked for range() of {len(numbers):,} items")
        return numbers

    def _loop(self, iterable: Any) -> Iterator[Any]:
        self.budget.clock()
        for item in iterable:
            self.budget.step("loop iterations and calls")
            yield item

    def _out(self, value: Any) -> str:
        text = str(value)
        self.budget.output(len(text))
        return text

    def _concat(self, parts: list[Any]) -> str:
        texts = [str(p) for p in parts]
        size = sum(map(len, texts))
        if size > MAX_TEMPLATE_OUTPUT:
            raise TemplateLimitError(f"the operator ~ would make {size:,} characters")
        return "".join(texts)

    def _guarded(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        budget = self.budget
        pass_arg = getattr(function, "jinja_pass_arg", None)
        what = f"filter {name}"

        def guarded(*args: Any, **kwargs: Any) -> Any:
            budget.step("loop iterations and calls")
            own = list(args[1:] if pass_arg is not None else args)  # the value, then its arguments
            value, rest = (own[0], own[1:]) if own else (None, [])
            if name in _WIDTH_FILTERS:
                for arg in [*rest, *kwargs.values()]:
                    _check_width(arg, what)
            if name == "indent" and isinstance(value, str):
                width = rest[0] if rest else kwargs.get("width", 4)
                size = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
                _check_replace(value, "\n", "\n" + " " * min(size, MAX_TEMPLATE_OUTPUT + 1), what)
            if name == "replace" and len(rest) >= 2:
                _check_replace(value, rest[0], rest[1], what)
            if name == "join":
                _check_value(" " * _strings_size(value), what)
            if name == "format" and isinstance(value, str):
                _check_format(value, [*rest, *kwargs.values()], what)
            return _check_value(function(*args, **kwargs), what)

        if pass_arg is not None:
            guarded.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
        return guarded

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self.budget.clock()
        what = f"the operator {operator}"
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right))
        if operator == "**" and ints and right > 0 and abs(left) > 1:
            bits = right * abs(left).bit_length()
            if bits > MAX_INT_BITS:
                raise TemplateLimitError(f"{left} ** {right} makes a number of ~{bits:,} bits")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(times, int) and not isinstance(times, bool) and _size(seq):
                    size = max(_size(seq), _strings_size(seq)) * max(times, 0)
                    if size > MAX_TEMPLATE_OUTPUT:
                        raise TemplateLimitError(
                            f"{what} would repeat a value to {size:,} items or characters"
                        )
            if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateLimitError(f"{what} would make a number of over {MAX_INT_BITS:,} bits")
        if (
            operator == "+"
            and _size(left)
            and _size(right)
            and _size(left) + _size(right) > MAX_TEMPLATE_OUTPUT
        ):
            raise TemplateLimitError(f"{what} would make {_size(left) + _size(right):,} items or characters")
        if operator == "%" and isinstance(left, str):
            _check_format(left, right if isinstance(right, tuple) else [right], what)
        return _check_value(super().call_binop(context, operator, left, right), what)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # The sandbox hands out str.format as its own wrapper when the attribute is read, so the
        # format string is checked here, with the arguments, when the wrapper is called.
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = str(value.__self__)

        def checked(*args: Any, **kwargs: Any) -> str:
            self.budget.step("loop iterations and calls")
            _check_format(fmt, [*args, *kwargs.values()], "str.format()")
            text: str = _check_value(wrapped(*args, **kwargs), "str.format()")
            return text

        return checked

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.budget.step("loop iterations and calls")
        owner = getattr(__obj, "__self__", None)
        method = getattr(__obj, "__name__", "")
        what = f"the call {method or 'of a macro'}()"
        if isinstance(owner, str):
            if method in _WIDTH_METHODS:
                for arg in [*args, *kwargs.values()]:
                    _check_width(arg, what)
                if method == "expandtabs" and (args or kwargs):
                    _check_replace(owner, "\t", " " * MAX_RANGE, what)
            if method == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1], what)
            if method == "join" and args:
                _check_value(" " * (_strings_size(args[0]) + len(owner) * _size(args[0])), what)
            if method in ("format", "format_map"):
                _check_format(owner, [*args, *kwargs.values()], what)
        return _check_value(super().call(__context, __obj, *args, **kwargs), what)


def render_template(
    template: str, variables: Mapping[str, Any], name: str = "prompt", seconds: float = RENDER_SECONDS
) -> str:
    """The template rendered in a bounded sandbox; every failure a RenderError naming ``name``."""
    env = BoundedEnvironment(seconds)
    try:
        compiled = env.from_string(template)
        out: list[str] = []
        produced = 0
        for chunk in compiled.generate(**variables):
            produced += len(chunk)
            if produced > MAX_TEMPLATE_OUTPUT:
                raise TemplateLimitError(f"produced more than {MAX_TEMPLATE_OUTPUT:,} characters")
            out.append(chunk)
        return "".join(out)
    except TemplateLimitError as exc:
        raise RenderError(f"prompt {name!r}: the template {exc}; {_LIMITS}") from None
    except jinja2.UndefinedError as exc:
        raise RenderError(
            f"prompt {name!r}: template variable missing: {exc.message}; "
            "give it in --attributes or as a defaultValue"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"prompt {name!r}: template line {exc.lineno}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"prompt {name!r}: template cannot be rendered: {exc}") from None
    except MemoryError:
        raise RenderError(f"prompt {name!r}: the template ran out of memory; {_LIMITS}") from None
    except Exception as exc:  # a template's own expression failing ({{ 1 / 0 }}, "a" + 1)
        raise RenderError(
            f"prompt {name!r}: template cannot be rendered: {type(exc).__name__}: {exc}"
        ) from None


# --- 5. the token table --------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRow:
    """One line of the token table; ``tokens`` None when unknown before the call (external data)."""

    part: str
    tokens: int | None
    budget: int | None = None

    @property
    def over(self) -> bool:
        return self.tokens is not None and self.budget is not None and self.tokens > self.budget


@dataclass(frozen=True)
class Tokens:
    template: int
    history: int
    history_inlined: bool
    rules: tuple[tuple[str, str, int | None, int], ...]  # source, injection point, actual, budget
    history_budget: int | None
    total: int
    max_tokens: int
    soft_limit: int | None
    hard_limit: int | None

    def rows(self) -> tuple[TokenRow, ...]:
        where = "written by the template" if self.history_inlined else "injected by rule"
        rows = [
            TokenRow("template (rendered)", self.template),
            TokenRow(f"history ({where})", self.history, self.history_budget),
        ]
        rows += [
            TokenRow(f"context rule {source} -> {point}", actual, budget)
            for source, point, actual, budget in self.rules
        ]
        rows.append(TokenRow("total vs prompt maxTokens", self.total, self.max_tokens))
        if self.soft_limit is not None:
            rows.append(TokenRow("total vs soft limit", self.total, self.soft_limit))
        if self.hard_limit is not None:
            rows.append(TokenRow("total vs hard limit", self.total, self.hard_limit))
        return tuple(rows)

    @property
    def over_hard_limit(self) -> bool:
        """The gateway refuses a prompt over the policy's hard limit: ``render`` fails on it."""
        return self.hard_limit is not None and self.total > self.hard_limit

    def hard_limit_problem(self) -> str:
        return (
            f"total ~{self.total} tokens is over the context policy's hard limit {self.hard_limit}"
            if self.over_hard_limit
            else ""
        )


def count_tokens(
    prompt: PromptSpec, policy: ContextPolicySpec | None, template: str, text: str, context: Context
) -> Tokens:
    """The prompt's tokens by part.

    total = the rendered template + the history when the gateway injects it (a
    conversation_history rule and a template that does not write ``messages`` itself) + the
    maxTokens reserved by every other rule (their data is fetched at call time, so unknown here).
    """
    rendered = estimate_tokens(text)
    history = history_tokens(context.messages)
    inlined = uses_messages(template)
    rules = tuple(
        (r.source, r.injection_point, history if r.source == HISTORY_SOURCE else None, r.max_tokens)
        for r in prompt.context_rules
    )
    injected = history if not inlined and any(r.source == HISTORY_SOURCE for r in prompt.context_rules) else 0
    reserved = sum(r.max_tokens for r in prompt.context_rules if r.source != HISTORY_SOURCE)
    return Tokens(
        template=rendered,
        history=history,
        history_inlined=inlined,
        rules=rules,
        history_budget=context.budget,
        total=rendered + injected + reserved,
        max_tokens=prompt.max_tokens,
        soft_limit=soft_limit(policy) if policy else None,
        hard_limit=policy.token_limits.hard_limit if policy else None,
    )


# --- composed ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    variant: str | None
    tokens: Tokens
    masked: int
    dropped_messages: int
    messages: tuple[Message, ...]
    ignored_attributes: tuple[str, ...] = ()
    compacted_messages: int = 0
    compaction: str = "unknown"

    @property
    def rows(self) -> tuple[TokenRow, ...]:
        return self.tokens.rows()

    def to_json(self) -> dict[str, Any]:
        t = self.tokens
        return {
            "prompt": self.text,
            "variant": self.variant,
            "tokens": {
                "template": t.template,
                "history": t.history,
                "history_inlined": t.history_inlined,
                "history_budget": t.history_budget,
                "context_rules": [
                    {
                        "source": source,
                        "injection_point": point,
                        "tokens": actual,
                        "max_tokens": budget,
                        "over": actual is not None and actual > budget,
                    }
                    for source, point, actual, budget in t.rules
                ],
                "total": t.total,
                "max_tokens": t.max_tokens,
                "soft_limit": t.soft_limit,
                "hard_limit": t.hard_limit,
                "over": [r.part for r in self.rows if r.over],
                "over_hard_limit": t.over_hard_limit,
            },
            "masked_count": self.masked,
            "dropped_messages": self.dropped_messages,
            "compacted_messages": self.compacted_messages,
            "compaction": self.compaction,
            "ignored_attributes": list(self.ignored_attributes),
        }


def build_prompt(
    prompt: PromptSpec,
    policy: ContextPolicySpec | None,
    conversation: Any,
    attributes: Any = None,
    flow_inputs: Mapping[str, str] | None = None,
    variant: str | None = None,
    *,
    name: str = "prompt",
    capacity: ModelCapacity | None = None,
) -> RenderedPrompt:
    """The prompt as the gateway would build it for ``conversation``; raises RenderError.

    ``capacity`` is the model's (``GET .../models/{id}/capacity``): with it, history is
    compacted on models that compact; without it, only evicted.
    """
    template = choose_template(prompt, variant)
    metadata, messages = flatten_conversation(conversation)
    typed = coerce_attributes(attributes, flow_inputs or {}) if attributes is not None else {}
    ignored = undeclared_attributes(attributes, flow_inputs or {})
    budget = history_budget(prompt, policy)
    context = apply_policy(policy, metadata, typed, messages, flow_inputs, budget=budget, capacity=capacity)
    variables: dict[str, Any] = {
        v.name: v.default_value for v in prompt.variables if v.default_value is not None
    }
    variables |= dict(context.metadata)
    variables |= dict(context.attributes)
    variables["messages"] = [dict(m) for m in context.messages]
    text = render_template(template, variables, name)
    tokens = count_tokens(prompt, policy, template, text, context)
    return RenderedPrompt(
        text,
        variant,
        tokens,
        context.masked,
        context.dropped,
        context.messages,
        ignored,
        context.compacted,
        context.compaction,
    )


def token_table(rendered: RenderedPrompt) -> str:
    """The token table as aligned text, over-budget lines flagged OVER."""
    rows = rendered.rows
    width = max(len(r.part) for r in rows)
    lines = [f"{'part':<{width}}  {'tokens':>7}  {'budget':>7}", "-" * (width + 18)]
    for r in rows:
        tokens = str(r.tokens) if r.tokens is not None else "?"
        budget = str(r.budget) if r.budget is not None else "-"
        lines.append(f"{r.part:<{width}}  {tokens:>7}  {budget:>7}{'  OVER' if r.over else ''}".rstrip())
    if any(t is None for _, _, t, _ in rendered.tokens.rules):
        lines.append("(?: fetched at call time; its maxTokens is counted in the total)")
    lines.append(f"PII masked: {rendered.masked}; messages dropped to fit: {rendered.dropped_messages}")
    compaction = {
        "enabled": f"compaction: on (model compacts); messages compacted: {rendered.compacted_messages}",
        "disabled": "compaction: off (the model does not compact)",
        "unknown": "compaction: not applied (model capacity unknown: give --model-capacity)",
    }[rendered.compaction]
    lines.append(compaction)
    if rendered.ignored_attributes:
        names = ", ".join(rendered.ignored_attributes)
        lines.append(f"Note: attributes the flow does not declare were ignored: {names}")
    if rendered.tokens.over_hard_limit:
        lines.append(f"OVER HARD LIMIT: {rendered.tokens.hard_limit_problem()}")
    return "\n".join(lines)


# --- previews for the plan -----------------------------------------------------------------------


def _render_or_why(
    prompt: Prompt,
    policy: ContextPolicy | None,
    conversation: Any,
    attributes: Any,
    flow_inputs: Mapping[str, str] | None,
    capacity: ModelCapacity | None = None,
) -> RenderedPrompt | RenderError:
    try:
        return build_prompt(
            prompt.spec,
            policy.spec if policy else None,
            conversation,
            attributes,
            flow_inputs,
            name=prompt.metadata.name,
            capacity=capacity,
        )
    except RenderError as exc:
        return exc


def preview_text(
    prompt: Prompt,
    policy: ContextPolicy | None,
    conversation: Any,
    attributes: Any = None,
    flow_inputs: Mapping[str, str] | None = None,
    capacity: ModelCapacity | None = None,
) -> str:
    """The rendered prompt, or ``(preview unavailable: why)``; never raises for content problems."""
    rendered = _render_or_why(prompt, policy, conversation, attributes, flow_inputs, capacity)
    if isinstance(rendered, RenderError):
        return f"(preview unavailable: {rendered})"
    return rendered.text


def preview(
    before: Prompt | None,
    after: Prompt,
    policy: ContextPolicy | None,
    conversation: Any,
    attributes: Any = None,
    flow_inputs: Mapping[str, str] | None = None,
    capacity: ModelCapacity | None = None,
) -> str:
    """A unified diff of the rendered prompt before and after a change, for the PR comment.

    Never raises for content problems: when the new prompt cannot be rendered, the answer is
    ``(preview unavailable: why)``; an old prompt that cannot be rendered diffs as empty. A
    new prompt over the policy's hard limit is flagged on the first line (the gateway would
    refuse it). Rendering is bounded (``BoundedEnvironment``), so a hostile template fails fast.
    """
    new = _render_or_why(after, policy, conversation, attributes, flow_inputs, capacity)
    if isinstance(new, RenderError):
        return f"(preview unavailable: {new})"
    old = _render_or_why(before, policy, conversation, attributes, flow_inputs, capacity) if before else None
    old_lines = old.text.splitlines() if isinstance(old, RenderedPrompt) else []
    lines = difflib.unified_diff(old_lines, new.text.splitlines(), "live", "desired", lineterm="")
    body = "\n".join(lines) or "(rendered prompt unchanged for the sample conversation)"
    if new.tokens.over_hard_limit:
        return f"(OVER HARD LIMIT: {new.tokens.hard_limit_problem()}; the gateway would refuse it)\n{body}"
    return body
