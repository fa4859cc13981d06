"""`reconciler render` end to end: a project written in the test (not the example manifests) with
the committed sample conversations, attributes and flow inputs; and a live conversation fetched
from the emulator over a loopback socket."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reconciler.cli import main
from tests.conftest import Org

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"

MANIFESTS = """\
apiVersion: reconciler.genesys.cloud/v1
kind: ContextPolicy
metadata: {name: policy-billing}
spec:
  modelId: genesys-llm-v4
  tokenLimits: {hardLimit: 16000, softLimitRatio: 0.75}
  retention: {persistSystemPrompts: true, retainUserPii: false, evictionPolicy: summarize}
  piiMasking:
    - {name: email, pattern: '[\\w.+-]+@[\\w-]+\\.[\\w.]+', replacement: '[EMAIL]'}
    - {name: card, pattern: '\\b(?:\\d[ -]?){13,16}\\b', replacement: '[CARD]'}
    - {name: phone, pattern: '\\+?\\d[\\d ()-]{7,14}\\d', replacement: '[PHONE]'}
  metadataFields: [conversationId, queue, agent, customer]
  flowId: flow-billing-intake
---
apiVersion: reconciler.genesys.cloud/v1
kind: Prompt
metadata: {name: billing}
spec:
  version: 1.0.0
  modelId: genesys-llm-v4
  maxTokens: 4000
  template: |
    {{ customerTier }} customer, VIP {{ isVip }}, balance {{ accountBalance }}, paid {{ lastPaymentDate }}.
    Queue {{ queue }}, agent {{ agent }}.
    {% for m in messages -%}
    - {{ m.from }}: {{ m.text }}
    {% endfor %}
  variables:
    - {name: customerTier, required: true}
    - {name: isVip, type: boolean}
    - {name: accountBalance, type: number}
    - {name: lastPaymentDate}
    - {name: queue}
    - {name: agent}
    - {name: customer}
    - {name: messages, type: array}
  contextRules:
    - {source: conversation_history, maxTokens: 2000, injectionPoint: user}
    - {source: external_api, maxTokens: 500, injectionPoint: system}
  contextPolicy: policy-billing
  variants:
    - {name: short, weight: 50, template: "Help {{ customer }} ({{ customerTier }})."}
    - {name: long, weight: 50, template: "Help {{ customer }} at length."}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose manifests folder holds the prompt, its policy and the committed samples."""
    (tmp_path / "reconciler.yaml").write_text("project: t\nmanifests: [manifests]\n", encoding="utf-8")
    (tmp_path / "manifests" / "prompts").mkdir(parents=True)
    (tmp_path / "manifests" / "prompts" / "billing.yaml").write_text(MANIFESTS, encoding="utf-8")
    shutil.copytree(SAMPLES, tmp_path / "manifests" / "samples")
    monkeypatch.chdir(tmp_path)
    for name in ("RECONCILER_ENV", "GENESYS_BASE_URL", "GENESYS_REGION"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def render(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["render", *args], env=env)


def assert_clean_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_the_billing_sample_renders_masked_typed_and_counted(project: Path) -> None:
    result = render(
        "billing",
        "--conversation",
        "manifests/samples/conv-1001.json",
        "--attributes",
        "manifests/samples/attributes-billing.json",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "gold customer, VIP True, balance 120.5, paid 2026-10-01."  # typed, date not masked
    assert lines[1] == "Queue Billing, agent Sam Okafor."
    assert lines[2] == "- system: You are assisting a billing customer. Follow the refund policy."
    assert "- customer: It's [EMAIL]" in lines and "- customer: How much is 49.99 EUR in USD?" in lines
    assert "- customer: The card is [CARD], both charges were 49.99 EUR." in lines
    assert "- customer: Can you call me back on [PHONE] if it doesn't arrive?" in lines
    assert not any(s in result.output for s in ("@example.com", "4111", "123 4567"))
    assert "PII masked: 3; messages dropped to fit: 0" in result.output
    assert re.search(r"^context rule external_api -> system +\? +500$", result.output, re.M)
    assert "OVER" not in result.output
    # the rendered prompt comes first, then the table
    assert result.output.index("Let me check the current rate") < result.output.index("part ")


def test_json_output_and_variants(project: Path) -> None:
    result = render(
        "billing",
        "--conversation",
        "manifests/samples/conv-1002.json",
        "--variant",
        "short",
        "--attributes",
        "manifests/samples/attributes-billing.json",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["prompt"] == "Help Lee Marsh (gold)." and body["variant"] == "short"
    assert body["masked_count"] == 0 and body["dropped_messages"] == 0
    tokens = body["tokens"]
    assert tokens["soft_limit"] == 12000 and tokens["hard_limit"] == 16000 and tokens["max_tokens"] == 4000
    assert tokens["template"] == 6 and not tokens["history_inlined"]
    assert tokens["total"] == tokens["template"] + tokens["history"] + 500
    unknown = render("billing", "--conversation", "manifests/samples/conv-1002.json", "--variant", "medium")
    assert_clean_error(unknown, "no variant 'medium'", "variants: short, long")


def test_user_mistakes_are_clean_errors(project: Path, tmp_path: Path) -> None:
    conv = "manifests/samples/conv-1001.json"
    assert_clean_error(render("nope", "--conversation", conv), "no Prompt named 'nope' (prompts: billing)")
    assert_clean_error(render("billing"), "give exactly one of --conversation FILE or --conversation-id ID")
    # the template needs customerTier and nothing gives it
    assert_clean_error(render("billing", "--conversation", conv), "'customerTier' is undefined")
    (tmp_path / "bad-attrs.json").write_text('{"customerTier": "gold", "isVip": "yes please"}')
    assert_clean_error(
        render("billing", "--conversation", conv, "--attributes", "bad-attrs.json"),
        "attribute 'isVip': 'yes please' is not a valid boolean",
    )
    (tmp_path / "broken.json").write_text("{not json")
    assert_clean_error(render("billing", "--conversation", "broken.json"), "broken.json: not valid JSON")
    (tmp_path / "list.json").write_text("[]")
    assert_clean_error(
        render("billing", "--conversation", "list.json"), "conversation: expected a JSON object"
    )
    (tmp_path / "inputs.json").write_text('[{"name": "customerTier", "dataType": "enum"}]')
    assert_clean_error(
        render(
            "billing",
            "--conversation",
            conv,
            "--attributes",
            "bad-attrs.json",
            "--flow-inputs",
            "inputs.json",
        ),
        "'customerTier' has dataType 'enum'",
    )


def test_flow_inputs_file_overrides_the_sample_and_is_required_without_one(project: Path) -> None:
    (project / "inputs.json").write_text('[{"name": "customerTier", "dataType": "string"}]')
    (project / "attrs.json").write_text('{"customerTier": "silver"}')
    args = ("billing", "--conversation", "manifests/samples/conv-1002.json", "--attributes", "attrs.json")
    assert render(*args, "--variant", "short", "--flow-inputs", "inputs.json").output.startswith(
        "Help Lee Marsh (silver)."
    )
    shutil.rmtree(project / "manifests" / "samples" / "flows")
    assert_clean_error(render(*args), "flow 'flow-billing-intake' was not found", "--flow-inputs")


def test_a_live_conversation_and_flow_come_from_the_org(project: Path, org: Org) -> None:
    shutil.rmtree(project / "manifests" / "samples")  # nothing local: both must be fetched
    (project / "attrs.json").write_text('{"customerTier": "gold", "accountBalance": "3", "isVip": "false"}')
    env = org.environ()
    result = render(
        "billing",
        "--conversation-id",
        "conv-1002",
        "--attributes",
        "attrs.json",
        "--variant",
        "short",
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Help Lee Marsh (gold).")
    (project / "attrs.json").write_text('{"accountBalance": "three"}')
    typed_live = render("billing", "--conversation-id", "conv-1002", "--attributes", "attrs.json", env=env)
    assert_clean_error(typed_live, "attribute 'accountBalance': 'three' is not a valid number")
    missing = render("billing", "--conversation-id", "conv-404", env=env)
    assert missing.exit_code == 1 and "Traceback" not in missing.output
