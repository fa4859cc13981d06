"""The render preview: conversation flattening, typed attributes, PII masking, history trimming,
strict rendering, and the `render` command on the committed samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.models import ContextPolicySpec, PromptSpec
from reconciler.prompting import SUMMARY_MARK, RenderError, build_prompt, coerce_attributes, trim_history

REPO = Path(__file__).resolve().parents[2]
CONVERSATION: dict[str, Any] = json.loads((REPO / "manifests" / "samples" / "conv-1001.json").read_text())
INPUTS = {"customerTier": "string", "accountBalance": "number", "isVip": "boolean", "lastPaymentDate": "date"}


def prompt(
    template: str = "{% for m in messages %}{{ m.from }}: {{ m.text }}\n{% endfor %}", **kw: Any
) -> PromptSpec:
    return PromptSpec.model_validate(
        {
            "version": "1.0.0",
            "modelId": "m",
            "maxTokens": 4000,
            "template": template,
            "variables": [{"name": "messages", "type": "array"}],
            **kw,
        }
    )


def policy(**kw: Any) -> ContextPolicySpec:
    spec: dict[str, Any] = {
        "modelId": "m",
        "tokenLimits": {"hardLimit": 4000, "softLimit": 3000},
        "piiMasking": [
            {"name": "email", "pattern": r"[\w.+-]+@[\w-]+\.[\w.]+", "replacement": "[EMAIL]"},
            {"name": "card", "pattern": r"\b(?:\d[ -]?){13,16}\b", "replacement": "[CARD]"},
        ],
    }
    spec.update(kw)
    return ContextPolicySpec.model_validate(spec)


def test_pii_is_masked_unless_retained() -> None:
    rendered = build_prompt(prompt(), policy(), CONVERSATION)
    assert "dana.whitfield@example.com" not in rendered.text and "[EMAIL]" in rendered.text
    assert "4111 1111 1111 1111" not in rendered.text and "[CARD]" in rendered.text
    assert rendered.masked == 2
    kept = build_prompt(prompt(), policy(retention={"retainUserPii": True}), CONVERSATION)
    assert "dana.whitfield@example.com" in kept.text and kept.masked == 0


def test_history_is_chronological_and_metadata_is_filtered() -> None:
    shuffled = {**CONVERSATION, "messages": list(reversed(CONVERSATION["messages"]))}
    rendered = build_prompt(
        prompt(
            "{{ messages[1].text }}|{{ queue }}|{{ agent }}",
            variables=[{"name": "messages", "type": "array"}, {"name": "queue"}, {"name": "agent"}],
        ),
        policy(metadataFields=["queue", "agent"]),
        shuffled,
    )
    assert rendered.text == "Hi, I was charged twice for my October invoice.|Billing|Sam Okafor"
    with pytest.raises(RenderError, match="customer"):
        build_prompt(
            prompt("{{ customer }}", variables=[{"name": "customer"}]),
            policy(metadataFields=["queue"]),
            CONVERSATION,
        )


@pytest.mark.parametrize("eviction", ["lru", "fifo", "summarize"])
def test_history_is_trimmed_to_the_soft_limit(eviction: str) -> None:
    tight = policy(tokenLimits={"hardLimit": 200, "softLimit": 60}, retention={"evictionPolicy": eviction})
    rendered = build_prompt(prompt(), tight, CONVERSATION)
    history = next(r for r in rendered.rows if r.part.startswith("history"))
    assert rendered.dropped_messages > 0 and history.tokens <= 60 + 12  # + the summary line itself
    assert "You are assisting a billing customer" in rendered.text  # system messages persist
    assert "Let me check the current rate" in rendered.text  # the newest turns stay
    assert "charged twice" not in rendered.text  # the oldest turn went first
    summary = SUMMARY_MARK.format(n=rendered.dropped_messages)
    assert (summary in rendered.text) == (eviction == "summarize")


def test_system_messages_can_be_dropped_when_not_persisted() -> None:
    messages = [
        {"from": "system", "text": "s" * 40, "timestamp": "1"},
        {"from": "customer", "text": "c" * 40, "timestamp": "2"},
    ]
    kept, dropped = trim_history(messages, 10, "fifo", persist_system=False)
    assert dropped == 1 and kept[0]["from"] == "customer"
    kept, dropped = trim_history(messages, 10, "fifo", persist_system=True)
    assert dropped == 1 and kept[0]["from"] == "system"


def test_attributes_are_typed_by_the_flow() -> None:
    typed = coerce_attributes(
        {"customerTier": "gold", "accountBalance": "120.50", "isVip": "yes", "lastPaymentDate": "2026-10-01"},
        INPUTS,
    )
    assert typed == {
        "customerTier": "gold",
        "accountBalance": 120.5,
        "isVip": True,
        "lastPaymentDate": "2026-10-01",
    }
    with pytest.raises(RenderError) as caught:
        coerce_attributes(
            {
                "accountBalance": "lots",
                "isVip": "yes please",
                "lastPaymentDate": "12/31/2024x",
                "shoeSize": 9,
            },
            INPUTS,
        )
    message = str(caught.value)
    for fragment in (
        "'accountBalance': 'lots' is not a valid number",
        "'isVip': 'yes please' is not a valid boolean",
        "'12/31/2024x' is not a valid date",
        "'shoeSize' is not an input",
    ):
        assert fragment in message


def test_strict_undefined_names_the_variable_and_variants_render() -> None:
    spec = prompt(
        "Hi {{ who }}",
        variables=[{"name": "who", "required": True}],
        variants=[{"name": "short", "template": "Yo {{ who }}", "weight": 100}],
    )
    with pytest.raises(RenderError, match="'who' is undefined"):
        build_prompt(spec, None, CONVERSATION)
    assert (
        build_prompt(
            spec.model_copy(update={"variables": []}),
            None,
            CONVERSATION,
            {"who": "Ana"},
            {"who": "string"},
            variant="short",
        ).text
        == "Yo Ana"
    )
    with pytest.raises(RenderError, match="variants: short"):
        build_prompt(spec, None, CONVERSATION, variant="long")


def test_render_command_on_the_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(
        main,
        [
            "render",
            "billing-assistant",
            "--env",
            "local",
            "--conversation",
            "manifests/samples/conv-1001.json",
            "--attributes",
            "manifests/samples/attributes-billing.json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "gold customer in the Billing queue" in result.output and "[EMAIL]" in result.output
    assert "PII masked: 4" in result.output and "total" in result.output
    bad = CliRunner().invoke(
        main,
        [
            "render",
            "billing-assistant",
            "--env",
            "local",
            "--conversation",
            "manifests/samples/conv-1001.json",
        ],
    )
    assert bad.exit_code == 1 and "customerTier" in bad.output and "Traceback" not in bad.output
