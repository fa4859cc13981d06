"""The effective prompt, as the LLM Gateway would build it for one conversation.

Pure: values in, values out; no I/O, no clock, no network (the CLI and the plan's previews read
the files and fetch live data). The steps, each a function, composed by ``build_prompt``:

1. ``flatten_conversation``: conversation metadata (id, channel, state, queue, agent, customer)
   and the message history, oldest first by its ISO-8601 timestamps.
2. ``coerce_attributes``: each attribute typed by the flow's input definitions.
3. ``apply_policy``: PII masked (unless the policy retains it), metadata cut to the policy's
   fields, history trimmed to the soft token limit by the eviction policy.
4. ``render_template``: Jinja2 in a sandbox where a missing variable is an error naming it.
5. ``count_tokens``: the token table against the rules' budgets and the policy's limits.

Tokens are estimated as the service does: characters / 4, rounded up. Every problem with the
input is a ``RenderError`` (never a traceback): the CLI prints it, ``preview`` returns it as text.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment

from reconciler.errors import RenderError
from reconciler.models import ContextPolicy, ContextPolicySpec, Prompt, PromptSpec

DATA_TYPES = ("string", "number", "boolean", "date")
HISTORY_SOURCE = "conversation_history"
# The marker replacing evicted turns under the summarize policy; the preview cannot summarize
# (that is the model's job), so it shows where the summary goes and how much it stands for.
SUMMARY_MARK = "[summary of {n} earlier {messages} omitted]"

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
# Plain decimal notation only: float() would also take "nan", "inf" and "1_000".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})

Message = dict[str, str]  # {"from", "text", "timestamp"}: what templates see as `messages`


def estimate_tokens(text: str) -> int:
    """The service's estimate: characters / 4, rounded up."""
    return math.ceil(len(text) / 4)


def history_tokens(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(m["text"]) for m in messages)


def summary_text(dropped: int) -> str:
    return SUMMARY_MARK.format(n=dropped, messages="message" if dropped == 1 else "messages")


# --- 1. the conversation -------------------------------------------------------------------------


def _participant(participants: Sequence[Any], role: str) -> str:
    for p in participants:
        if isinstance(p, Mapping) and p.get("role") == role:
            return str(p.get("name") or "")
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

    ``conversation`` has the shape of ``GET /api/v2/conversations/{id}``.
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
    queue = routing.get("queue") or {}
    metadata = {
        "conversationId": str(conversation.get("id") or ""),
        "channel": str(conversation.get("channel") or ""),
        "state": str(conversation.get("state") or ""),
        "queue": str(queue.get("name") or "") if isinstance(queue, Mapping) else "",
        "agent": _participant(participants, "agent"),
        "customer": _participant(participants, "customer"),
    }
    dated: list[tuple[datetime, int, Message]] = []
    for index, m in enumerate(raw_messages):
        if not isinstance(m, Mapping):
            raise RenderError(f"conversation: messages[{index}] must be an object")
        instant = _instant(index, m.get("timestamp"))
        message = {
            "from": str(m.get("from") or ""),
            "text": str(m.get("text") or ""),
            "timestamp": str(m["timestamp"]),
        }
        dated.append((instant, index, message))
    dated.sort(key=lambda item: (item[0], item[1]))  # the index keeps equal instants in file order
    return metadata, [message for _, _, message in dated]


# --- 2. attributes -------------------------------------------------------------------------------


def flow_inputs_from(definitions: Any, where: str = "flow inputs") -> dict[str, str]:
    """``[{name, dataType}, ...]`` (a flow's inputDefinitions) as ``{name: dataType}``."""
    if not isinstance(definitions, list):
        raise RenderError(f"{where}: expected a JSON list of {{name, dataType}}")
    inputs: dict[str, str] = {}
    for index, d in enumerate(definitions):
        if not isinstance(d, Mapping) or not isinstance(d.get("name"), str) or not d["name"]:
            raise RenderError(f"{where}: item {index} needs a name")
        data_type = d.get("dataType", "string")
        if data_type not in DATA_TYPES:
            raise RenderError(
                f"{where}: {d['name']!r} has dataType {data_type!r} (expected one of {', '.join(DATA_TYPES)})"
            )
        inputs[d["name"]] = str(data_type)
    return inputs


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
    """Each attribute typed by the flow's input definitions; every problem reported at once."""
    if not isinstance(raw, Mapping):
        raise RenderError(f"attributes: expected a JSON object of name: value, got {type(raw).__name__}")
    typed: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in raw.items():
        if name not in inputs:
            declared = ", ".join(sorted(inputs)) or "none"
            problems.append(f"attribute {name!r} is not an input of the flow (inputs: {declared})")
            continue
        try:
            typed[name] = coerce(name, value, inputs[name])
        except RenderError as exc:
            problems.append(str(exc))
    if problems:
        raise RenderError("; ".join(problems))
    return typed


# --- 3. the context policy -----------------------------------------------------------------------


def compile_rules(policy: ContextPolicySpec) -> list[tuple[re.Pattern[str], str]]:
    rules = []
    for rule in policy.pii_masking:
        try:
            rules.append((re.compile(rule.pattern), rule.replacement))
        except re.error as exc:
            raise RenderError(f"piiMasking rule {rule.name!r}: pattern does not compile ({exc})") from None
    return rules


def mask(text: str, rules: Sequence[tuple[re.Pattern[str], str]]) -> tuple[str, int]:
    """``text`` with every rule applied in order, and how many replacements were made."""
    count = 0
    for pattern, replacement in rules:
        # The replacement is literal text: a backslash in it must not read as a group reference.
        text, n = pattern.subn(replacement.replace("\\", "\\\\"), text)
        count += n
    return text, count


def soft_limit(policy: ContextPolicySpec) -> int:
    """softLimit, else floor(hardLimit * softLimitRatio), else the hard limit."""
    limits = policy.token_limits
    if limits.soft_limit is not None:
        return limits.soft_limit
    if limits.soft_limit_ratio is not None:
        return math.floor(limits.hard_limit * limits.soft_limit_ratio)
    return limits.hard_limit


def trim_history(
    messages: Sequence[Message], budget: int, eviction: str, persist_system: bool
) -> tuple[list[Message], int]:
    """The history cut to ``budget`` tokens, and how many messages were dropped.

    lru and fifo both drop the oldest turns first (a transcript records no reads to rank by);
    summarize does the same and puts one marked placeholder where the dropped turns were, its
    own tokens counted in the budget. System messages are never dropped when persisted, so the
    result can stay over budget: the token table flags that.
    """
    droppable = [i for i, m in enumerate(messages) if not (persist_system and m["from"] == "system")]
    summarize = eviction == "summarize"

    def size(dropped: int) -> int:
        gone = set(droppable[:dropped])
        kept = history_tokens([m for i, m in enumerate(messages) if i not in gone])
        return kept + (estimate_tokens(summary_text(dropped)) if summarize and dropped else 0)

    dropped = 0
    while dropped < len(droppable) and size(dropped) > budget:
        dropped += 1
    if not dropped:
        return list(messages), 0
    gone = set(droppable[:dropped])
    kept = [m for i, m in enumerate(messages) if i not in gone]
    if summarize:
        first = droppable[0]
        at = sum(1 for i in range(first) if i not in gone)
        last = messages[droppable[dropped - 1]]
        kept.insert(at, {"from": "system", "text": summary_text(dropped), "timestamp": last["timestamp"]})
    return kept, dropped


@dataclass(frozen=True)
class Context:
    """What the policy lets into the prompt."""

    metadata: Mapping[str, str]
    attributes: Mapping[str, Any]
    messages: tuple[Message, ...]
    masked: int
    dropped: int
    budget: int | None  # the history's token budget (the soft limit), None without a policy


def apply_policy(
    policy: ContextPolicySpec | None,
    metadata: Mapping[str, str],
    attributes: Mapping[str, Any],
    messages: Sequence[Message],
    inputs: Mapping[str, str] | None = None,
) -> Context:
    """Mask PII, keep the policy's metadata fields, trim the history to the soft limit.

    Only text is masked: message texts, metadata, and attributes the flow types as strings
    (a date such as 2026-10-01 would otherwise match a phone pattern).
    """
    if policy is None:
        return Context(dict(metadata), dict(attributes), tuple(messages), 0, 0, None)
    masked = 0
    meta, attrs, history = dict(metadata), dict(attributes), [dict(m) for m in messages]
    if not policy.retention.retain_user_pii:
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
    if policy.metadata_fields:
        meta = {k: v for k, v in meta.items() if k in policy.metadata_fields}
    budget = soft_limit(policy)
    trimmed, dropped = trim_history(
        history, budget, policy.retention.eviction_policy, policy.retention.persist_system_prompts
    )
    return Context(meta, attrs, tuple(trimmed), masked, dropped, budget)


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
        return "messages" in jinja2.meta.find_undeclared_variables(_ENV.parse(template))
    except jinja2.TemplateSyntaxError:
        return False


def render_template(template: str, variables: Mapping[str, Any]) -> str:
    try:
        return _ENV.from_string(template).render(**variables)
    except jinja2.UndefinedError as exc:
        raise RenderError(
            f"template variable missing: {exc.message}; give it in --attributes or as a defaultValue"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"template line {exc.lineno}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"template cannot be rendered: {exc}") from None
    except Exception as exc:  # a template's own expression failing ({{ 1 / 0 }}, "a" + 1)
        raise RenderError(f"template cannot be rendered: {type(exc).__name__}: {exc}") from None


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
            },
            "masked_count": self.masked,
            "dropped_messages": self.dropped_messages,
        }


def build_prompt(
    prompt: PromptSpec,
    policy: ContextPolicySpec | None,
    conversation: Any,
    attributes: Any = None,
    flow_inputs: Mapping[str, str] | None = None,
    variant: str | None = None,
) -> RenderedPrompt:
    """The prompt as the gateway would build it for ``conversation``; raises RenderError."""
    template = choose_template(prompt, variant)
    metadata, messages = flatten_conversation(conversation)
    typed = coerce_attributes(attributes, flow_inputs or {}) if attributes is not None else {}
    context = apply_policy(policy, metadata, typed, messages, flow_inputs)
    variables: dict[str, Any] = {
        v.name: v.default_value for v in prompt.variables if v.default_value is not None
    }
    variables |= dict(context.metadata)
    variables |= dict(context.attributes)
    variables["messages"] = [dict(m) for m in context.messages]
    text = render_template(template, variables)
    tokens = count_tokens(prompt, policy, template, text, context)
    return RenderedPrompt(text, variant, tokens, context.masked, context.dropped, context.messages)


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
    return "\n".join(lines)


# --- previews for the plan -----------------------------------------------------------------------


def _render_or_why(
    prompt: Prompt,
    policy: ContextPolicy | None,
    conversation: Any,
    attributes: Any,
    flow_inputs: Mapping[str, str] | None,
) -> str | RenderError:
    try:
        return build_prompt(
            prompt.spec, policy.spec if policy else None, conversation, attributes, flow_inputs
        ).text
    except RenderError as exc:
        return exc


def preview_text(
    prompt: Prompt,
    policy: ContextPolicy | None,
    conversation: Any,
    attributes: Any = None,
    flow_inputs: Mapping[str, str] | None = None,
) -> str:
    """The rendered prompt, or ``(preview unavailable: why)``; never raises for content problems."""
    text = _render_or_why(prompt, policy, conversation, attributes, flow_inputs)
    return f"(preview unavailable: {text})" if isinstance(text, RenderError) else text


def preview(
    before: Prompt | None,
    after: Prompt,
    policy: ContextPolicy | None,
    conversation: Any,
    attributes: Any = None,
    flow_inputs: Mapping[str, str] | None = None,
) -> str:
    """A unified diff of the rendered prompt before and after a change, for the PR comment.

    Never raises for content problems: when the new prompt cannot be rendered, the answer is
    ``(preview unavailable: why)``; an old prompt that cannot be rendered diffs as empty.
    """
    new = _render_or_why(after, policy, conversation, attributes, flow_inputs)
    if isinstance(new, RenderError):
        return f"(preview unavailable: {new})"
    old = _render_or_why(before, policy, conversation, attributes, flow_inputs) if before else ""
    old_lines = [] if isinstance(old, RenderError) else old.splitlines()
    lines = difflib.unified_diff(old_lines, new.splitlines(), "live", "desired", lineterm="")
    return "\n".join(lines) or "(rendered prompt unchanged for the sample conversation)"
