"""Seed fidelity of the preview: the conversation shapes the documents and the platform give,
soft limits and compaction by the model's capacity, built-in PII detectors, the attribute
inspector, and budgets that trim and fail. Sample payloads are written here from the shapes in
documents 001, 003 and 004 (and the platform's), never read from the example manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from reconciler.cli import main
from reconciler.kinds import adapter_for
from reconciler.loader import collect_manifests
from reconciler.models import ContextPolicy, Kind, Prompt
from reconciler.prompting import (
    AUTO_COMPACT_THRESHOLD,
    ModelCapacity,
    build_prompt,
    compaction_text,
    estimate_tokens,
    flatten_conversation,
    inspect_attributes,
    model_capacity_from,
    preview,
    soft_limit,
    token_table,
)
from reconciler.rules import check_capacity, notes
from tests.conftest import Org, write_project
from tests.prompting.conftest import INPUTS, make_conversation, make_policy, make_prompt, message

# --- conversation shapes ----------------------------------------------------------------------

# Document 001's shape: the channel in `type`, participants by `role`, a queue in routing.
DOCUMENT_001 = {
    "id": "abc123-def456",
    "type": "chat",
    "state": "connected",
    "participants": [
        {"id": "agent-uuid", "name": "Support Agent", "role": "agent", "state": "connected"},
        {"id": "customer-uuid", "name": "John Doe", "role": "customer", "state": "connected"},
    ],
    "routing": {"queue": {"id": "queue-uuid", "name": "Billing Support"}, "skillRequirements": ["billing"]},
    "messages": [
        {
            "from": "agent-uuid",
            "text": "Can you give the invoice number?",
            "timestamp": "2024-05-12T10:30:15Z",
        },
        {
            "from": "customer-uuid",
            "text": "My invoice shows a duplicate.",
            "timestamp": "2024-05-12T10:30:00Z",
        },
    ],
}

# The platform's own shape (purecloudplatformclientv2 Conversation): purpose, queueName, media.
PLATFORM = {
    "id": "c6f1e3a0-0000-4000-8000-000000000001",
    "participants": [
        {"id": "p-1", "purpose": "customer", "name": "Ada Quinn", "calls": [{"state": "connected"}]},
        {
            "id": "p-2",
            "purpose": "acd",
            "name": "Orders",
            "queueId": "q-orders",
            "queueName": "Orders",
            "calls": [{"state": "disconnected"}],
        },
        {"id": "p-3", "purpose": "agent", "name": "Rui Costa", "queueId": "q-orders", "calls": [{}]},
    ],
    "messages": [{"from": "p-1", "text": "Where is my parcel?", "timestamp": "2026-11-20T09:00:00Z"}],
}


def test_document_001_shape_reads_the_channel_from_type_and_senders_as_roles() -> None:
    metadata, messages = flatten_conversation(DOCUMENT_001)
    assert metadata == {
        "conversationId": "abc123-def456",
        "channel": "chat",
        "state": "connected",
        "queue": "Billing Support",
        "agent": "Support Agent",
        "customer": "John Doe",
    }
    assert [(m["from"], m["text"]) for m in messages] == [
        ("customer", "My invoice shows a duplicate."),
        ("agent", "Can you give the invoice number?"),
    ]


def test_the_platform_shape_is_read_first() -> None:
    metadata, messages = flatten_conversation(PLATFORM)
    assert metadata["channel"] == "voice"  # from the participants' calls, the platform's media lists
    assert metadata["queue"] == "Orders" and metadata["agent"] == "Rui Costa"
    assert metadata["customer"] == "Ada Quinn" and metadata["state"] == "unknown"
    assert messages[0]["from"] == "customer"
    # the platform's media win over the documents' `type` when both are there
    assert flatten_conversation({**PLATFORM, "type": "email"})[0]["channel"] == "voice"


def test_the_documents_defaults_apply() -> None:
    bare = {
        "id": "c-1",
        "participants": [{"id": "x", "role": "customer"}, {"id": "y", "purpose": "user"}],
        "routing": {"queue": {"id": "q-9"}},
    }
    metadata, _ = flatten_conversation(bare)
    assert metadata == {
        "conversationId": "c-1",
        "channel": "unknown",
        "state": "unknown",
        "queue": "Unknown Queue",
        "agent": "Anonymous",
        "customer": "Anonymous",
    }
    unqueued, _ = flatten_conversation({"id": "c-2"})
    assert unqueued["queue"] == "" and unqueued["agent"] == "" and unqueued["channel"] == "unknown"
    only_id, _ = flatten_conversation({"participants": [{"purpose": "acd", "queueId": "q-1"}]})
    assert only_id["queue"] == "Unknown Queue"


def test_todays_sample_shape_still_reads() -> None:
    metadata, _ = flatten_conversation(make_conversation())
    assert metadata["channel"] == "webchat" and metadata["queue"] == "Billing"


def test_the_emulators_conversation_flattens_over_the_wire(org: Org) -> None:
    response = org.api("GET", "/api/v2/conversations/conv-1001")
    assert response.status_code == 200
    body = response.json()
    assert {p.get("purpose") for p in body["participants"]} >= {"customer", "agent", "acd"}
    metadata, messages = flatten_conversation(body)
    assert metadata["channel"] == "chat" and metadata["queue"] == "Billing"
    assert metadata["agent"] == "Sam Okafor" and metadata["customer"] == "Dana Whitfield"
    assert messages and messages[0]["from"] == "system"


# --- soft limit and compaction ---------------------------------------------------------------

COMPACTS = ModelCapacity("genesys-llm-v4", 32768, 8, ("json", "text"), True)
NO_COMPACTION = ModelCapacity("openai-gpt-4o-mini", 16384, 2, ("json", "text"), False)


def long_conversation(turns: int = 30) -> dict[str, Any]:
    texts = [message("system", "You are assisting a billing customer.", 0)]
    texts += [
        message("customer" if i % 2 else "agent", f"Turn {i}: " + "details of the charge " * 4, i + 1)
        for i in range(turns)
    ]
    return make_conversation(texts)


def test_the_soft_limit_defaults_to_90_percent_of_the_hard_limit() -> None:
    assert soft_limit(make_policy(tokenLimits={"hardLimit": 1000})) == 900
    assert soft_limit(make_policy(tokenLimits={"hardLimit": 1000, "softLimit": 500})) == 500


def test_history_is_compacted_at_the_threshold_on_a_model_that_compacts() -> None:
    policy = make_policy(tokenLimits={"hardLimit": 400})  # soft 360; compaction at 85% = 306
    conversation = long_conversation()
    full = sum(estimate_tokens(m["text"]) for m in conversation["messages"])
    assert full > 360  # over the budget, so something must give
    compacted = build_prompt(make_prompt(), policy, conversation, capacity=COMPACTS)
    assert compacted.compaction == "enabled" and compacted.compacted_messages > 0
    assert compacted.tokens.history <= int(AUTO_COMPACT_THRESHOLD * 360)
    marker = compaction_text(compacted.compacted_messages)
    assert [m["text"] for m in compacted.messages].count(marker) == 1
    assert compacted.messages[0]["text"] == "You are assisting a billing customer."  # persisted
    assert "compaction: on" in token_table(compacted)

    evicted = build_prompt(make_prompt(), policy, conversation, capacity=NO_COMPACTION)
    assert evicted.compaction == "disabled" and evicted.compacted_messages == 0
    assert int(AUTO_COMPACT_THRESHOLD * 360) < evicted.tokens.history <= 360  # lru: to the budget
    assert not any(m["text"].startswith("[compacted") for m in evicted.messages)
    unknown = build_prompt(make_prompt(), policy, conversation)
    assert unknown.compaction == "unknown" and unknown.messages == evicted.messages


def test_an_explicit_threshold_compacts_further() -> None:
    policy = make_policy(tokenLimits={"hardLimit": 400}, retention={"autoCompactThreshold": 0.5})
    rendered = build_prompt(make_prompt(), policy, long_conversation(), capacity=COMPACTS)
    assert rendered.tokens.history <= 180 and rendered.compacted_messages > 0


def test_history_is_trimmed_to_the_history_rules_own_budget() -> None:
    spec = make_prompt(contextRules=[{"source": "conversation_history", "maxTokens": 60}])
    rendered = build_prompt(spec, make_policy(), long_conversation())  # soft limit 3000: looser
    assert rendered.tokens.history_budget == 60 and rendered.tokens.history <= 60
    assert rendered.dropped_messages > 0
    assert not any(r.over for r in rendered.rows if r.part.startswith("context rule"))


# --- model capacity ----------------------------------------------------------------------------


def _policy_doc(**spec: Any) -> dict[str, Any]:
    base = {"modelId": "genesys-llm-v4", "tokenLimits": {"hardLimit": 4000}}
    return {
        "apiVersion": "reconciler.genesys.cloud/v1",
        "kind": "ContextPolicy",
        "metadata": {"name": "pol-cap"},
        "spec": base | spec,
    }


def _capacities(org: Org, *models: str) -> dict[str, dict[str, Any]]:
    out = {}
    for model in models:
        response = org.api("GET", f"/api/v2/ai/llm/models/{model}/capacity")
        assert response.status_code == 200
        out[model] = response.json()
    return out


@pytest.mark.parametrize(
    ("spec", "field", "client_says"),
    [
        (
            {"modelId": "openai-gpt-4o-mini", "retention": {"autoCompactThreshold": 0.8}},
            "memory_retention_directives.auto_compact_threshold",
            "does not do (compaction_enabled: false)",
        ),
        (
            {"modelId": "genesys-llm-lite", "format": "json"},
            "format",
            "spec.format 'json' is not supported by model 'genesys-llm-lite' (supported_formats: text)",
        ),
    ],
    ids=["compaction on a model without it", "unsupported format"],
)
def test_a_policy_the_model_cannot_serve_is_refused_by_both_sides(
    org: Org, spec: dict[str, Any], field: str, client_says: str
) -> None:
    doc = _policy_doc(**spec)
    policy = ContextPolicy.model_validate(doc)
    body = adapter_for(Kind.CONTEXT_POLICY).to_wire("pol-cap", doc["spec"], {})
    response = org.api("PUT", "/api/v2/ai/llm/context-policies/pol-cap", body)
    assert response.status_code == 400, response.text
    assert [d["fieldName"] for d in response.json()["details"]] == [field]
    problems = check_capacity([policy], _capacities(org, policy.spec.model_id))
    assert len(problems) == 1 and client_says in problems[0] and "ContextPolicy/pol-cap" in problems[0]
    # the same policy on a model that can serve it passes both sides
    fine = _policy_doc(**(spec | {"modelId": "genesys-llm-v4"}))
    fine_body = adapter_for(Kind.CONTEXT_POLICY).to_wire("pol-cap", fine["spec"], {})
    assert org.api("PUT", "/api/v2/ai/llm/context-policies/pol-cap", fine_body).status_code == 201
    fine_policy = ContextPolicy.model_validate(fine)
    assert check_capacity([fine_policy], _capacities(org, "genesys-llm-v4")) == []


def test_more_context_rules_than_the_models_windows_is_refused_by_both_sides(org: Org) -> None:
    rules = [
        {"source": "conversation_history", "maxTokens": 100, "injectionPoint": "user"},
        {"source": "knowledge_base", "maxTokens": 100, "injectionPoint": "system"},
    ]
    spec = {"version": "1.0.0", "modelId": "genesys-llm-lite", "maxTokens": 1000, "template": "Hi"}
    spec["contextRules"] = rules
    doc = {"apiVersion": "reconciler.genesys.cloud/v1", "kind": "Prompt", "metadata": {"name": "wide"}}
    prompt = Prompt.model_validate(doc | {"spec": spec})
    body = adapter_for(Kind.PROMPT).to_wire("wide", spec, {})
    response = org.api("POST", "/api/v2/ai/llm/prompts", body)
    assert response.status_code == 400, response.text
    assert [d["fieldName"] for d in response.json()["details"]] == ["contextRules"]
    problems = check_capacity([prompt], _capacities(org, "genesys-llm-lite"))
    assert problems == [
        "Prompt/wide: spec.contextRules has 2 context rules; model 'genesys-llm-lite' takes at most "
        "1 context windows (max_context_windows)"
    ]


def test_a_capacity_body_is_checked() -> None:
    assert model_capacity_from(COMPACTS.to_wire()) == COMPACTS
    with pytest.raises(Exception, match="compaction_enabled must be true or false"):
        model_capacity_from({"model_id": "m", "max_tokens": 5, "compaction_enabled": "yes"})


# --- PII ---------------------------------------------------------------------------------------

PII_TURNS = [
    message("customer", "Reach me at jo.bloggs@example.org or +1 (555) 201-3344.", 1),
    message("customer", "Card 5500-0000-0000-0004, billing address Springfield, IL 62704.", 2),
    message("customer", "Order 88213 for 49.99 EUR, paid 2026-10-01.", 3),
]


def test_builtin_detectors_mask_when_pii_must_not_be_retained() -> None:
    policy = make_policy(piiMasking=[], retention={"retainUserPii": False})
    rendered = build_prompt(make_prompt(), policy, make_conversation(PII_TURNS))
    text = rendered.text
    assert "customer: Reach me at [EMAIL] or [PHONE]." in text
    assert "customer: Card [CARD], billing address Springfield, [POSTAL_CODE]." in text
    # an order number, an amount and a date are not PII
    assert "customer: Order 88213 for 49.99 EUR, paid 2026-10-01." in text
    assert rendered.masked == 4
    kept = build_prompt(
        make_prompt(), make_policy(retention={"retainUserPii": True}), make_conversation(PII_TURNS)
    )
    assert kept.masked == 0 and "jo.bloggs@example.org" in kept.text


def test_the_policys_own_rules_apply_before_the_builtins() -> None:
    policy = make_policy(piiMasking=[{"name": "order", "pattern": r"Order \d+", "replacement": "Order #"}])
    rendered = build_prompt(make_prompt(), policy, make_conversation(PII_TURNS))
    assert "customer: Order # for 49.99 EUR" in rendered.text and "[EMAIL]" in rendered.text


def test_validate_notes_a_policy_that_relies_only_on_the_builtins(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        """\
        apiVersion: reconciler.genesys.cloud/v1
        kind: ContextPolicy
        metadata: {name: bare}
        spec:
          modelId: genesys-llm-v4
          tokenLimits: {hardLimit: 4000}
          retention: {retainUserPii: false}
        ---
        apiVersion: reconciler.genesys.cloud/v1
        kind: ContextPolicy
        metadata: {name: ruled}
        spec:
          modelId: genesys-llm-v4
          tokenLimits: {hardLimit: 4000}
          piiMasking: [{name: id, pattern: 'ACC-\\d+'}]
        """,
    )
    manifests, problems = collect_manifests([tmp_path / "manifests"])
    assert problems == []
    found = notes(manifests)
    assert len(found) == 1 and found[0].field == "spec.retention.retainUserPii"
    assert "only the built-in detectors" in found[0].message and found[0].line == 7


# --- the attribute inspector ------------------------------------------------------------------


def test_the_inspector_reports_missing_extra_and_per_key_types() -> None:
    payload = {"customerTier": "gold", "accountBalance": "120.50", "isVip": True, "shoeSize": 9}
    report = inspect_attributes(payload, INPUTS)
    assert report.missing == ("lastPaymentDate",) and report.extra == ("shoeSize",)
    status = {c.name: (c.expected, c.actual, c.status) for c in report.checks}
    assert status == {
        "customerTier": ("string", "string", "OK"),
        "accountBalance": ("number", "string", "MISMATCH"),
        "isVip": ("boolean", "boolean", "OK"),
        "shoeSize": ("undeclared", "number", "IGNORED"),
    }
    text = report.to_text("billing")
    assert "WARNING: missing flow inputs: lastPaymentDate" in text
    assert "NOTE: extra attributes (ignored by the flow): shoeSize" in text
    assert "accountBalance: '120.50' (expected: number, actual: string) -> MISMATCH" in text
    assert report.to_json()["ok"] is False
    dated = inspect_attributes({"lastPaymentDate": "2026-10-01", "accountBalance": 3}, INPUTS)
    assert {c.status for c in dated.checks} == {"OK"} and dated.to_json()["ok"] is True


def test_extra_attributes_are_ignored_when_rendering_and_noted() -> None:
    spec = make_prompt("Tier {{ customerTier }}.", variables=[{"name": "customerTier"}])
    rendered = build_prompt(spec, None, make_conversation(), {"customerTier": "gold", "shoeSize": 9}, INPUTS)
    assert rendered.text == "Tier gold." and rendered.ignored_attributes == ("shoeSize",)
    assert "attributes the flow does not declare were ignored: shoeSize" in token_table(rendered)


# --- the CLI: inspector, hard limit ------------------------------------------------------------

PROJECT = """\
apiVersion: reconciler.genesys.cloud/v1
kind: ContextPolicy
metadata: {name: pol}
spec:
  modelId: genesys-llm-v4
  tokenLimits: {hardLimit: HARD}
  retention: {retainUserPii: false}
  flowId: flow-billing-intake
---
apiVersion: reconciler.genesys.cloud/v1
kind: Prompt
metadata: {name: billing}
spec:
  version: 1.0.0
  modelId: genesys-llm-v4
  maxTokens: 4000
  template: "Tier {{ customerTier }}. {% for m in messages %}{{ m.from }}: {{ m.text }} {% endfor %}"
  variables: [{name: customerTier}, {name: messages, type: array}]
  contextRules: [{source: external_api, maxTokens: 100}]
  contextPolicy: pol
"""
FLOW = [
    {"name": "customerTier", "dataType": "string"},
    {"name": "accountBalance", "dataType": "number"},
    {"name": "isVip", "dataType": "boolean"},
]


def project(root: Path, monkeypatch: pytest.MonkeyPatch, hard: int = 4000) -> Path:
    write_project(root, PROJECT.replace("HARD", str(hard)))
    flows = root / "manifests" / "samples" / "flows"
    flows.mkdir(parents=True)
    (flows / "flow-billing-intake.json").write_text(json.dumps(FLOW))
    (root / "conv.json").write_text(json.dumps(DOCUMENT_001))
    (root / "attrs.json").write_text(json.dumps({"customerTier": "gold", "accountBalance": "7", "extra": 1}))
    monkeypatch.chdir(root)
    for name in ("RECONCILER_ENV", "GENESYS_BASE_URL", "GENESYS_REGION"):
        monkeypatch.delenv(name, raising=False)
    return root


def render(*args: str) -> Result:
    return CliRunner().invoke(main, ["render", *args])


def test_render_inspect_attributes_as_text_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project(tmp_path, monkeypatch)
    text = render("billing", "--inspect-attributes", "--attributes", "attrs.json")
    assert text.exit_code == 0, text.output
    assert "WARNING: missing flow inputs: isVip" in text.output
    assert "NOTE: extra attributes (ignored by the flow): extra" in text.output
    assert "accountBalance: '7' (expected: number, actual: string) -> MISMATCH" in text.output
    as_json = render("billing", "--inspect-attributes", "--attributes", "attrs.json", "--format", "json")
    body = json.loads(as_json.output)
    assert body["missing"] == ["isVip"] and body["extra"] == ["extra"] and body["ok"] is False
    assert [a["status"] for a in body["attributes"]] == ["OK", "MISMATCH", "IGNORED"]
    needs = render("billing", "--inspect-attributes")
    assert needs.exit_code == 1 and "--inspect-attributes needs --attributes FILE" in needs.output


def test_render_exits_non_zero_over_the_hard_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project(tmp_path, monkeypatch, hard=120)  # the external_api rule alone reserves 100
    result = render("billing", "--conversation", "conv.json", "--attributes", "attrs.json")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Tier gold. customer: My invoice shows a duplicate.")  # printed first
    assert "OVER HARD LIMIT" in result.output
    assert "prompt 'billing': total ~" in result.output and "is over the context policy's hard limit 120" in (
        result.output
    )
    assert "Traceback" not in result.output
    project(tmp_path / "roomy", monkeypatch, hard=4000)
    ok = render("billing", "--conversation", "conv.json", "--attributes", "attrs.json")
    assert ok.exit_code == 0, ok.output
    assert "compaction: not applied" in ok.output


def test_render_reads_the_models_capacity_and_refuses_what_it_cannot_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path, monkeypatch)
    policy = (
        (root / "manifests" / "all.yaml")
        .read_text()
        .replace(
            "retention: {retainUserPii: false}",
            "retention: {retainUserPii: false, autoCompactThreshold: 0.5}",
        )
    )
    (root / "manifests" / "all.yaml").write_text(policy)
    models = root / "manifests" / "samples" / "models"
    models.mkdir()
    (models / "genesys-llm-v4.json").write_text(json.dumps(COMPACTS.to_wire()))
    args = ("billing", "--conversation", "conv.json", "--attributes", "attrs.json")
    ok = render(*args)
    assert ok.exit_code == 0, ok.output
    assert "compaction: on" in ok.output
    (root / "cap.json").write_text(json.dumps(NO_COMPACTION.to_wire() | {"model_id": "genesys-llm-v4"}))
    refused = render(*args, "--model-capacity", "cap.json")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "autoCompactThreshold 0.5 asks for compaction" in refused.output


def test_the_pr_preview_flags_a_prompt_over_the_hard_limit() -> None:
    prompt = Prompt.model_validate(
        {
            "apiVersion": "reconciler.genesys.cloud/v1",
            "kind": "Prompt",
            "metadata": {"name": "big"},
            "spec": make_prompt(contextRules=[{"source": "external_api", "maxTokens": 500}]).model_dump(
                by_alias=True
            ),
        }
    )
    policy = ContextPolicy.model_validate(
        {
            "apiVersion": "reconciler.genesys.cloud/v1",
            "kind": "ContextPolicy",
            "metadata": {"name": "small"},
            "spec": make_policy(tokenLimits={"hardLimit": 300}).model_dump(by_alias=True, exclude_none=True),
        }
    )
    text = preview(None, prompt, policy, make_conversation())
    first, _, rest = text.partition("\n")
    assert first.startswith("(OVER HARD LIMIT: total ~") and "hard limit 300" in first
    assert rest.startswith("--- live")
