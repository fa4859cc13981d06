"""Builders for render-preview inputs: prompts, policies and conversations made in the test,
never read from the example manifests (those change with the examples)."""

from __future__ import annotations

from typing import Any

from reconciler.models import ContextPolicySpec, PromptSpec

HISTORY_TEMPLATE = "{% for m in messages %}{{ m.from }}: {{ m.text }}\n{% endfor %}"
INPUTS = {"customerTier": "string", "accountBalance": "number", "isVip": "boolean", "lastPaymentDate": "date"}


def make_prompt(template: str = HISTORY_TEMPLATE, **spec: Any) -> PromptSpec:
    return PromptSpec.model_validate(
        {"version": "1.0.0", "modelId": "m", "maxTokens": 4000, "template": template, **spec}
    )


def make_policy(**spec: Any) -> ContextPolicySpec:
    base: dict[str, Any] = {
        "modelId": "m",
        "tokenLimits": {"hardLimit": 4000, "softLimit": 3000},
        "piiMasking": [
            {"name": "email", "pattern": r"[\w.+-]+@[\w-]+\.[\w.]+", "replacement": "[EMAIL]"},
            {"name": "card", "pattern": r"\b(?:\d[ -]?){13,16}\b", "replacement": "[CARD]"},
            {"name": "phone", "pattern": r"\+?\d[\d ()-]{7,14}\d", "replacement": "[PHONE]"},
        ],
    }
    return ContextPolicySpec.model_validate(base | spec)


def message(who: str, text: str, minute: int) -> dict[str, str]:
    return {"from": who, "text": text, "timestamp": f"2026-11-20T09:{minute:02d}:00Z"}


def make_conversation(messages: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A billing dispute: a system message, then turns carrying an email, a card and a phone."""
    return {
        "id": "conv-9",
        "channel": "webchat",
        "state": "connected",
        "participants": [
            {"id": "p1", "name": "Dana Whitfield", "role": "customer", "state": "connected"},
            {"id": "p2", "name": "Sam Okafor", "role": "agent", "state": "connected"},
        ],
        "routing": {"queue": {"id": "q1", "name": "Billing"}, "skillRequirements": ["billing"]},
        "messages": messages
        if messages is not None
        else [
            message("system", "You are assisting a billing customer.", 0),
            message("customer", "I was charged twice for my October invoice.", 1),
            message("agent", "Sorry. Which email is on the account?", 2),
            message("customer", "It is dana.whitfield@example.com", 3),
            message("agent", "And the card charged?", 4),
            message("customer", "Card 4111 1111 1111 1111, both were 49.99 EUR.", 5),
            message("agent", "One charge will be refunded within 5 days.", 6),
            message("customer", "Call me back on +353 87 123 4567 please.", 7),
            message("agent", "Will do. Anything else?", 8),
            message("customer", "How much is 49.99 EUR in USD?", 9),
            message("agent", "Let me check the current rate.", 10),
        ],
    }
