"""The effective prompt, as the gateway would build it for a conversation (pure: no I/O).

Steps, each a function: flatten the conversation (metadata and chronological history), type the
attributes by the flow's input definitions, apply the context policy (mask PII, keep only its
metadata fields, trim history to the soft token limit by its eviction policy, never dropping
system messages when it persists them), then render the template in a sandboxed Jinja2
environment where a missing variable is an error naming it. Tokens are estimated as the service
does: characters / 4, rounded up.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from reconciler.errors import ReconcilerError
from reconciler.models import ContextPolicy, ContextPolicySpec, Prompt, PromptSpec

SUMMARY_MARK = "[summary of {n} earlier message(s) omitted]"
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


class RenderError(ReconcilerError):
    """The prompt cannot be rendered for this input (a missing variable, an untyped attribute)."""


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


# --- 1. the conversation ---------------------------------------------------------------------------


def _participant(conversation: Mapping[str, Any], role: str) -> str:
    for p in conversation.get("participants") or []:
        if isinstance(p, Mapping) and p.get("role") == role:
            return str(p.get("name", ""))
    return ""


def flatten_conversation(conversation: Mapping[str, Any]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Metadata fields and the message history, oldest first."""
    routing = conversation.get("routing") or {}
    metadata = {
        "conversationId": str(conversation.get("id", "")),
        "channel": str(conversation.get("channel", "")),
        "state": str(conversation.get("state", "")),
        "queue": str((routing.get("queue") or {}).get("name", "")),
        "agent": _participant(conversation, "agent"),
        "customer": _participant(conversation, "customer"),
    }
    messages = [
        {
            "from": str(m.get("from", "")),
            "text": str(m.get("text", "")),
            "timestamp": str(m.get("timestamp", "")),
        }
        for m in conversation.get("messages") or []
        if isinstance(m, Mapping)
    ]
    messages.sort(key=lambda m: m["timestamp"])
    return metadata, messages


# --- 2. attributes ---------------------------------------------------------------------------------


def _coerce(name: str, value: Any, data_type: str) -> Any:
    def fail() -> RenderError:
        return RenderError(f"attribute {name!r}: {value!r} is not a valid {data_type}")

    text = str(value).strip()
    match data_type:
        case "string":
            return str(value)
        case "number":
            if isinstance(value, bool):
                raise fail()
            try:
                number = float(text)
            except ValueError:
                raise fail() from None
            return int(number) if number.is_integer() and "." not in text else number
        case "boolean":
            if isinstance(value, bool):
                return value
            if text.lower() in ("true", "yes", "1"):
                return True
            if text.lower() in ("false", "no", "0"):
                return False
            raise fail()
        case "date":
            try:
                return (
                    date.fromisoformat(text[:10]).isoformat()
                    if len(text) == 10
                    else datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
                )
            except ValueError:
                raise fail() from None
    raise RenderError(f"attribute {name!r}: unknown data type {data_type!r}")


def coerce_attributes(raw: Mapping[str, Any], inputs: Mapping[str, str]) -> dict[str, Any]:
    """Each attribute typed by the flow's input definition; every problem reported at once."""
    typed, problems = {}, []
    for name, value in raw.items():
        if name not in inputs:
            problems.append(
                f"attribute {name!r} is not an input of the flow "
                f"(inputs: {', '.join(sorted(inputs)) or 'none'})"
            )
            continue
        try:
            typed[name] = _coerce(name, value, inputs[name])
        except RenderError as exc:
            problems.append(str(exc))
    if problems:
        raise RenderError("; ".join(problems))
    return typed


# --- 3. the context policy -------------------------------------------------------------------------


def mask(text: str, rules: Sequence[tuple[re.Pattern[str], str]]) -> tuple[str, int]:
    count = 0
    for pattern, replacement in rules:
        text, n = pattern.subn(replacement, text)
        count += n
    return text, count


def soft_limit(policy: ContextPolicySpec) -> int:
    limits = policy.token_limits
    if limits.soft_limit is not None:
        return limits.soft_limit
    if limits.soft_limit_ratio is not None:
        return math.floor(limits.hard_limit * limits.soft_limit_ratio)
    return limits.hard_limit


def trim_history(
    messages: list[dict[str, str]], budget: int, eviction: str, persist_system: bool
) -> tuple[list[dict[str, str]], int]:
    """Drop the oldest turns until the history fits ``budget`` tokens.

    lru and fifo both drop oldest first (a transcript has no reads to order by); summarize puts
    one marked placeholder where the dropped turns were. System messages stay when persisted.
    """
    kept = list(messages)
    dropped = 0

    def size(items: list[dict[str, str]]) -> int:
        return sum(estimate_tokens(m["text"]) for m in items)

    while size(kept) > budget:
        index = next((i for i, m in enumerate(kept) if not (persist_system and m["from"] == "system")), None)
        if index is None:
            break
        kept.pop(index)
        dropped += 1
    if dropped and eviction == "summarize":
        placeholder = {"from": "system", "text": SUMMARY_MARK.format(n=dropped), "timestamp": ""}
        first_turn = next((i for i, m in enumerate(kept) if m["from"] != "system"), len(kept))
        kept.insert(first_turn, placeholder)
    return kept, dropped


# --- 4. rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRow:
    part: str
    tokens: int
    budget: int | None = None

    @property
    def over(self) -> bool:
        return self.budget is not None and self.tokens > self.budget


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    variant: str | None
    rows: tuple[TokenRow, ...]
    masked: int
    dropped_messages: int
    limits: Mapping[str, int] = field(default_factory=dict)


def build_prompt(
    prompt: PromptSpec,
    policy: ContextPolicySpec | None,
    conversation: Mapping[str, Any],
    attributes: Mapping[str, Any] | None = None,
    flow_inputs: Mapping[str, str] | None = None,
    variant: str | None = None,
) -> RenderedPrompt:
    template = prompt.template
    if variant is not None:
        chosen = [v for v in prompt.variants if v.name == variant]
        if not chosen:
            known = ", ".join(v.name for v in prompt.variants) or "none"
            raise RenderError(f"no variant {variant!r} (variants: {known})")
        template = chosen[0].template
    metadata, messages = flatten_conversation(conversation)
    typed = coerce_attributes(attributes or {}, flow_inputs or {}) if attributes else {}

    masked = 0
    if policy is not None:
        if not policy.retention.retain_user_pii:
            rules = [(re.compile(r.pattern), r.replacement) for r in policy.pii_masking]
            for m in messages:
                m["text"], n = mask(m["text"], rules)
                masked += n
            for bag in (metadata, typed):
                for key, value in bag.items():
                    if isinstance(value, str):
                        bag[key], n = mask(value, rules)
                        masked += n
        if policy.metadata_fields:
            metadata = {k: v for k, v in metadata.items() if k in policy.metadata_fields}
    history_rule = next((r for r in prompt.context_rules if r.source == "conversation_history"), None)
    budget = soft_limit(policy) if policy is not None else None
    if history_rule is not None:
        budget = min(budget, history_rule.max_tokens) if budget is not None else history_rule.max_tokens
    dropped = 0
    if budget is not None:
        messages, dropped = trim_history(
            messages,
            budget,
            policy.retention.eviction_policy if policy else "fifo",
            policy.retention.persist_system_prompts if policy else True,
        )

    variables: dict[str, Any] = {
        v.name: v.default_value for v in prompt.variables if v.default_value is not None
    }
    variables.update(metadata)
    variables.update(typed)
    variables["messages"] = messages
    try:
        text = _ENV.from_string(template).render(**variables)
    except jinja2.UndefinedError as exc:
        raise RenderError(
            f"template variable missing: {exc.message}; give it in --attributes or a defaultValue"
        ) from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"template cannot be rendered: {exc}") from None

    history_tokens = sum(estimate_tokens(m["text"]) for m in messages)
    rows = [TokenRow("template (rendered)", estimate_tokens(text))]
    rows += [
        TokenRow(
            f"context rule: {r.source} ({r.injection_point})",
            history_tokens if r.source == "conversation_history" else r.max_tokens,
            r.max_tokens,
        )
        for r in prompt.context_rules
    ]
    rows.append(TokenRow("history (after trimming)", history_tokens, budget))
    total = estimate_tokens(text) + sum(
        r.max_tokens for r in prompt.context_rules if r.source != "conversation_history"
    )
    limits = {"prompt maxTokens": prompt.max_tokens}
    if policy is not None:
        limits |= {"soft limit": soft_limit(policy), "hard limit": policy.token_limits.hard_limit}
    rows.append(TokenRow("total", total, min(limits.values())))
    return RenderedPrompt(text, variant, tuple(rows), masked, dropped, limits)


def token_table(rendered: RenderedPrompt) -> str:
    width = max(len(r.part) for r in rendered.rows)
    lines = [f"{'part':<{width}}  {'tokens':>7}  {'budget':>7}", "-" * (width + 18)]
    for r in rendered.rows:
        flag = "  OVER" if r.over else ""
        budget = str(r.budget) if r.budget is not None else "-"
        lines.append(f"{r.part:<{width}}  {r.tokens:>7}  {budget:>7}{flag}")
    lines.append("limits: " + ", ".join(f"{k} {v}" for k, v in rendered.limits.items()))
    lines.append(f"PII masked: {rendered.masked}; messages dropped to fit: {rendered.dropped_messages}")
    return "\n".join(lines)


def preview(
    before: Prompt | None,
    after: Prompt,
    policy: ContextPolicy | None,
    conversation: Mapping[str, Any],
    attributes: Mapping[str, Any] | None = None,
    flow_inputs: Mapping[str, str] | None = None,
) -> str:
    """A unified diff of the rendered prompt before and after a change, for the PR comment.

    Never raises for content problems: a prompt that cannot be rendered says why instead.
    """

    def rendered(prompt: Prompt | None) -> str:
        if prompt is None:
            return ""
        try:
            return build_prompt(
                prompt.spec, policy.spec if policy else None, conversation, attributes, flow_inputs
            ).text
        except RenderError as exc:
            return f"(preview unavailable: {exc})"

    old, new = rendered(before), rendered(after)
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "live", "desired", lineterm="")
    return "\n".join(lines) or "(rendered prompt unchanged for the sample conversation)"
