"""The pure render preview: conversation flattening, typed attributes, PII masking, history
trimming under each eviction policy, strict rendering, variants, the token table, and previews."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from reconciler.kinds import flow_inputs_from
from reconciler.models import ContextPolicy, Prompt
from reconciler.prompting import (
    RenderError,
    build_prompt,
    coerce_attributes,
    estimate_tokens,
    flatten_conversation,
    preview,
    preview_text,
    soft_limit,
    summary_text,
    token_table,
    trim_history,
)
from tests.prompting.conftest import (
    INPUTS,
    make_conversation,
    make_policy,
    make_prompt,
    message,
)

# --- 1. flattening ---------------------------------------------------------------------------


def test_metadata_is_flattened_and_history_sorted_by_instant_not_by_text() -> None:
    conversation = make_conversation(
        [
            {"from": "agent", "text": "third", "timestamp": "2026-11-20T09:00:00.500Z"},
            {"from": "customer", "text": "second", "timestamp": "2026-11-20T10:00:00+01:00"},  # 09:00Z
            {"from": "system", "text": "first", "timestamp": "2026-11-20T08:59:59Z"},
            {"from": "agent", "text": "fourth", "timestamp": "2026-11-20T09:00:00.500Z"},  # tie: file order
        ]
    )
    metadata, messages = flatten_conversation(conversation)
    assert metadata == {
        "conversationId": "conv-9",
        "channel": "webchat",
        "state": "connected",
        "queue": "Billing",
        "agent": "Sam Okafor",
        "customer": "Dana Whitfield",
    }
    assert [m["text"] for m in messages] == ["first", "second", "third", "fourth"]
    assert messages[1] == {"from": "customer", "text": "second", "timestamp": "2026-11-20T10:00:00+01:00"}


@pytest.mark.parametrize(
    ("conversation", "fragment"),
    [
        ([], "expected a JSON object, got list"),
        ({"messages": {"a": 1}}, "messages must be a list"),
        ({"messages": ["hi"]}, "messages[0] must be an object"),
        ({"messages": [{"from": "agent", "text": "x"}]}, "messages[0] has no timestamp"),
        (
            {"messages": [{"from": "a", "text": "x", "timestamp": "yesterday"}]},
            "'yesterday' is not an ISO-8601",
        ),
    ],
)
def test_a_malformed_conversation_is_a_render_error(conversation: Any, fragment: str) -> None:
    with pytest.raises(RenderError) as caught:
        build_prompt(make_prompt(), None, conversation)
    assert fragment in str(caught.value)


# --- 2. attributes ---------------------------------------------------------------------------


def test_attributes_are_typed_by_the_flow_inputs() -> None:
    typed = coerce_attributes(
        {
            "customerTier": "gold",
            "accountBalance": "120.50",
            "isVip": "true",
            "lastPaymentDate": "2026-10-01",
        },
        INPUTS,
    )
    assert typed == {
        "customerTier": "gold",
        "accountBalance": 120.5,
        "isVip": True,
        "lastPaymentDate": "2026-10-01",
    }
    assert coerce_attributes({"accountBalance": "42", "isVip": False}, INPUTS) == {
        "accountBalance": 42,
        "isVip": False,
    }
    assert coerce_attributes({"accountBalance": 7.25, "isVip": "No"}, INPUTS) == {
        "accountBalance": 7.25,
        "isVip": False,
    }
    assert coerce_attributes({"lastPaymentDate": "2026-10-01T08:30:00+02:00"}, INPUTS) == {
        "lastPaymentDate": "2026-10-01T08:30:00+02:00"
    }
    # typed values reach the template as their type: arithmetic and tests work
    rendered = build_prompt(
        make_prompt("{{ accountBalance * 2 }} {{ 'vip' if isVip else 'regular' }}"),
        None,
        make_conversation(),
        {"accountBalance": "120.50", "isVip": "true"},
        INPUTS,
    )
    assert rendered.text == "241.0 vip"


@pytest.mark.parametrize(
    ("attributes", "fragment"),
    [
        ({"isVip": "yes please"}, "attribute 'isVip': 'yes please' is not a valid boolean"),
        (
            {"lastPaymentDate": "12/31/2024x"},
            "attribute 'lastPaymentDate': '12/31/2024x' is not a valid date",
        ),
        ({"lastPaymentDate": "2026-02-30"}, "'2026-02-30' is not a valid date"),
        ({"accountBalance": "lots"}, "attribute 'accountBalance': 'lots' is not a valid number"),
        ({"accountBalance": "nan"}, "'nan' is not a valid number"),
        ({"accountBalance": "1_000"}, "'1_000' is not a valid number"),
        ({"accountBalance": True}, "True is not a valid number"),
        ({"accountBalance": None}, "None is not a valid number"),
        ({"customerTier": ["gold"]}, "['gold'] is not a valid string"),
    ],
)
def test_each_attribute_that_cannot_be_typed_is_named(attributes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RenderError) as caught:
        coerce_attributes(attributes, INPUTS)
    assert fragment in str(caught.value)


def test_every_attribute_problem_is_reported_at_once() -> None:
    with pytest.raises(RenderError) as caught:
        coerce_attributes({"isVip": "maybe", "accountBalance": "x", "customerTier": "gold"}, INPUTS)
    assert "'isVip'" in str(caught.value) and "'accountBalance'" in str(caught.value)
    with pytest.raises(RenderError, match="expected a JSON object"):
        coerce_attributes(["customerTier"], INPUTS)


def test_flow_inputs_are_checked() -> None:
    assert flow_inputs_from([{"name": "a", "dataType": "number"}, {"name": "b"}]) == {
        "a": "number",
        "b": "string",
    }
    with pytest.raises(RenderError, match="'a' has dataType 'integer'"):
        flow_inputs_from([{"name": "a", "dataType": "integer"}])
    with pytest.raises(RenderError, match="item 0 needs a name"):
        flow_inputs_from([{"dataType": "string"}])
    with pytest.raises(RenderError, match="expected a JSON list"):
        flow_inputs_from({"a": "string"})


# --- 3. the policy: PII and metadata ---------------------------------------------------------


def test_pii_is_masked_in_messages_metadata_and_string_attributes() -> None:
    policy = make_policy(
        piiMasking=[
            *make_policy().model_dump(by_alias=True)["piiMasking"],
            {"name": "names", "pattern": "Dana Whitfield|Dana", "replacement": "[NAME]"},
        ]
    )
    rendered = build_prompt(
        make_prompt(
            "{{ customer }}|{{ customerTier }}|{{ lastPaymentDate }}\n"
            + "{% for m in messages %}{{ m.text }}\n{% endfor %}"
        ),
        policy,
        make_conversation(),
        {"customerTier": "gold, contact dana@example.com", "lastPaymentDate": "2026-10-01"},
        INPUTS,
    )
    first, *history = rendered.text.splitlines()
    # the date attribute looks like a phone number to the phone pattern: dates are not masked
    assert first == "[NAME]|gold, contact [EMAIL]|2026-10-01"
    text = "\n".join(history)
    for secret in ("dana.whitfield@example.com", "4111 1111 1111 1111", "+353 87 123 4567"):
        assert secret not in text
    assert (
        "It is [EMAIL]" in text and "Card [CARD], both" in text and "Call me back on [PHONE] please" in text
    )
    # the email in the message is masked by the email rule before the name rule can see "dana"
    assert rendered.masked == 5  # 3 in messages, the customer's name, the email in the attribute


def test_pii_is_kept_when_the_policy_retains_it() -> None:
    rendered = build_prompt(
        make_prompt(), make_policy(retention={"retainUserPii": True}), make_conversation()
    )
    assert "dana.whitfield@example.com" in rendered.text and "4111 1111 1111 1111" in rendered.text
    assert rendered.masked == 0


def test_a_replacement_is_literal_text_and_a_bad_pattern_is_a_render_error() -> None:
    policy = make_policy(piiMasking=[{"name": "card", "pattern": r"(\d{4}) \d{4}", "replacement": r"\1 \d"}])
    rendered = build_prompt(make_prompt(), policy, make_conversation())
    assert r"Card \1 \d \1 \d, both" in rendered.text
    broken = make_policy(piiMasking=[{"name": "oops", "pattern": "(unclosed", "replacement": "x"}])
    with pytest.raises(RenderError, match="piiMasking rule 'oops': pattern does not compile"):
        build_prompt(make_prompt(), broken, make_conversation())


def test_only_the_policys_metadata_fields_reach_the_template() -> None:
    policy = make_policy(metadataFields=["queue", "agent"])
    rendered = build_prompt(make_prompt("{{ queue }}/{{ agent }}"), policy, make_conversation())
    assert rendered.text == "Billing/Sam Okafor"
    with pytest.raises(RenderError, match="'customer' is undefined"):
        build_prompt(make_prompt("{{ customer }}"), policy, make_conversation())
    # no metadataFields: every flattened field is available
    assert build_prompt(make_prompt("{{ channel }}"), make_policy(), make_conversation()).text == "webchat"


# --- 3. the policy: trimming -----------------------------------------------------------------


def test_soft_limit_comes_from_the_ratio_when_not_given() -> None:
    assert soft_limit(make_policy(tokenLimits={"hardLimit": 1001, "softLimitRatio": 0.75})) == 750
    assert soft_limit(make_policy(tokenLimits={"hardLimit": 1000, "softLimit": 600})) == 600


@pytest.mark.parametrize("eviction", ["lru", "fifo", "summarize"])
def test_history_is_trimmed_to_the_soft_limit_oldest_first(eviction: str) -> None:
    conversation = make_conversation()
    _, full = flatten_conversation(conversation)
    budget = 40
    tight = make_policy(
        tokenLimits={"hardLimit": 200, "softLimit": budget},
        retention={"evictionPolicy": eviction, "retainUserPii": True},  # texts compare as written
    )
    rendered = build_prompt(make_prompt(), tight, conversation)
    kept = list(rendered.messages)
    assert sum(estimate_tokens(m["text"]) for m in full) > budget  # the test means something
    assert rendered.tokens.history == sum(estimate_tokens(m["text"]) for m in kept) <= budget
    assert kept[0]["text"] == "You are assisting a billing customer."  # system persisted
    assert kept[-1]["text"] == "Let me check the current rate."  # the newest turn stays
    dropped = rendered.dropped_messages
    turns = [m for m in kept if not m["text"].startswith("[summary")]
    assert len(turns) == len(full) - dropped
    assert [m["text"] for m in turns[1:]] == [m["text"] for m in full[1 + dropped :]]  # oldest went first
    placeholders = [m for m in kept if m["text"] == summary_text(dropped)]
    if eviction == "summarize":
        assert len(placeholders) == 1 and kept[1] is placeholders[0]  # where the dropped turns were
        assert f"[summary of {dropped} earlier messages omitted]" in rendered.text
        assert kept[1]["timestamp"] == full[dropped]["timestamp"]  # still chronological
    else:
        assert not placeholders and "[summary" not in rendered.text
    # one message fewer dropped would not have fit: nothing was dropped needlessly
    spare = full[dropped]["text"]
    assert rendered.tokens.history + estimate_tokens(spare) > budget - (
        estimate_tokens(summary_text(dropped)) if eviction == "summarize" else 0
    )


def test_a_single_dropped_message_is_summarized_in_the_singular() -> None:
    messages = [message("customer", "a" * 44, 1), message("agent", "b" * 8, 2)]  # 11 + 2 tokens
    kept, dropped = trim_history(messages, 12, "summarize", persist_system=True)
    assert dropped == 1
    assert [m["text"] for m in kept] == ["[summary of 1 earlier message omitted]", "b" * 8]


def test_system_messages_are_persisted_or_not_as_the_policy_says() -> None:
    messages = [
        message("system", "s" * 40, 1),
        message("customer", "c" * 40, 2),
        message("system", "t" * 4, 3),
    ]
    kept, dropped = trim_history(messages, 12, "fifo", persist_system=True)
    assert dropped == 1 and [m["from"] for m in kept] == ["system", "system"]
    kept, dropped = trim_history(messages, 12, "fifo", persist_system=False)
    assert dropped == 1 and [m["text"] for m in kept] == ["c" * 40, "t" * 4]


def test_persisted_system_messages_over_the_budget_are_kept_and_flagged() -> None:
    conversation = make_conversation([message("system", "s" * 400, 1), message("customer", "hello", 2)])
    policy = make_policy(tokenLimits={"hardLimit": 200, "softLimit": 50}, retention={"evictionPolicy": "lru"})
    rendered = build_prompt(make_prompt(), policy, conversation)
    assert [m["from"] for m in rendered.messages] == ["system"] and rendered.dropped_messages == 1
    history_row = next(r for r in rendered.rows if r.part.startswith("history"))
    assert history_row.tokens == 100 and history_row.budget == 50 and history_row.over
    assert "OVER" in next(line for line in token_table(rendered).splitlines() if line.startswith("history"))


# --- 4. the template -------------------------------------------------------------------------


def test_a_missing_variable_is_an_error_naming_it() -> None:
    with pytest.raises(RenderError, match="template variable missing: 'orderId' is undefined"):
        build_prompt(make_prompt("Order {{ orderId }} for {{ customer }}"), None, make_conversation())


def test_declared_defaults_apply_and_are_overridden_by_metadata_and_attributes() -> None:
    spec = make_prompt(
        "{{ tone }} {{ queue }} {{ customerTier }}",
        variables=[
            {"name": "tone", "defaultValue": "warm"},
            {"name": "queue", "defaultValue": "General"},
            {"name": "customerTier", "defaultValue": "bronze"},
        ],
    )
    assert build_prompt(spec, None, make_conversation()).text == "warm Billing bronze"
    attrs = build_prompt(spec, None, make_conversation(), {"customerTier": "gold"}, INPUTS)
    assert attrs.text == "warm Billing gold"


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{% for m in messages %}", "template line 1:"),
        ("{{ ''.__class__.__mro__ }}", "template cannot be rendered"),  # the sandbox refuses
        ("{{ messages[0].nope }}", "has no attribute 'nope'"),
    ],
)
def test_a_template_that_fails_is_a_render_error(template: str, fragment: str) -> None:
    with pytest.raises(RenderError) as caught:
        build_prompt(make_prompt(template), None, make_conversation())
    assert fragment in str(caught.value)


def test_a_variant_is_rendered_by_name_and_an_unknown_one_lists_the_known() -> None:
    spec = make_prompt(
        "Main {{ customer }}",
        variants=[
            {"name": "concise", "template": "Short {{ customer }}", "weight": 50},
            {"name": "friendly", "template": "Hi {{ customer }}!", "weight": 50},
        ],
    )
    assert build_prompt(spec, None, make_conversation()).text == "Main Dana Whitfield"
    rendered = build_prompt(spec, None, make_conversation(), variant="friendly")
    assert rendered.text == "Hi Dana Whitfield!" and rendered.variant == "friendly"
    assert rendered.to_json()["variant"] == "friendly"
    with pytest.raises(
        RenderError, match=r"no variant 'long' in this prompt \(variants: concise, friendly\)"
    ):
        build_prompt(spec, None, make_conversation(), variant="long")


# --- 5. the token table ----------------------------------------------------------------------


def test_token_table_sums_with_the_history_written_by_the_template() -> None:
    spec = make_prompt(
        maxTokens=250,
        contextRules=[
            {"source": "conversation_history", "maxTokens": 20, "injectionPoint": "user"},
            {"source": "knowledge_base", "maxTokens": 240, "injectionPoint": "system"},
        ],
    )
    policy = make_policy(tokenLimits={"hardLimit": 400, "softLimitRatio": 0.5})
    rendered = build_prompt(spec, policy, make_conversation())
    t = rendered.tokens
    assert t.history_inlined and t.template == math.ceil(len(rendered.text) / 4)
    assert t.history == sum(math.ceil(len(m["text"]) / 4) for m in rendered.messages)
    assert t.total == t.template + 240  # history already inside the rendered text; the KB reserved
    rows = {r.part: r for r in rendered.rows}
    # the history is trimmed to the rule's own 20 tokens (the soft limit, 200, is looser)
    assert rows["context rule conversation_history -> user"].tokens == t.history <= 20
    assert t.history_budget == 20 and rendered.dropped_messages > 0
    assert not rows["context rule conversation_history -> user"].over
    assert rows["context rule knowledge_base -> system"].tokens is None
    assert rows["total vs prompt maxTokens"].budget == 250 and rows["total vs soft limit"].budget == 200
    assert rows["total vs hard limit"].budget == 400
    assert t.total > 250  # the knowledge base's 240 plus the rendered template
    assert (
        {r.part for r in rendered.rows if r.over}
        == {"total vs prompt maxTokens", "total vs soft limit"}
        == set(rendered.to_json()["tokens"]["over"])
    )
    table = token_table(rendered)
    assert re.search(rf"^total vs prompt maxTokens +{t.total} +250  OVER$", table, re.M)
    assert "total vs hard limit" in table and table.count("OVER") == 2


def test_token_table_adds_the_history_the_gateway_injects() -> None:
    spec = make_prompt(
        "Help {{ customer }}.",
        contextRules=[
            {"source": "conversation_history", "maxTokens": 2000, "injectionPoint": "user"},
            {"source": "external_api", "maxTokens": 100, "injectionPoint": "system"},
        ],
    )
    rendered = build_prompt(spec, make_policy(), make_conversation())
    t = rendered.tokens
    assert not t.history_inlined and t.template == estimate_tokens("Help Dana Whitfield.") == 5
    assert t.total == t.template + t.history + 100
    assert not any(r.over for r in rendered.rows)
    # no conversation_history rule: nothing injects the history, so it is not counted
    bare = build_prompt(make_prompt("Help {{ customer }}."), make_policy(), make_conversation())
    assert bare.tokens.total == 5


def test_json_shape() -> None:
    rendered = build_prompt(make_prompt(), make_policy(), make_conversation())
    body = rendered.to_json()
    assert set(body) == {
        "prompt",
        "variant",
        "tokens",
        "masked_count",
        "dropped_messages",
        "compacted_messages",
        "compaction",
        "ignored_attributes",
    }
    assert body["compaction"] == "unknown" and body["tokens"]["over_hard_limit"] is False
    assert body["masked_count"] == 3 and body["dropped_messages"] == 0 and body["prompt"] == rendered.text
    assert body["tokens"]["soft_limit"] == 3000 and body["tokens"]["hard_limit"] == 4000


# --- previews for the plan -------------------------------------------------------------------


def _prompt(template: str) -> Prompt:
    return Prompt.model_validate(
        {
            "apiVersion": "reconciler.genesys.cloud/v1",
            "kind": "Prompt",
            "metadata": {"name": "p"},
            "spec": make_prompt(template).model_dump(by_alias=True),
        }
    )


def _policy() -> ContextPolicy:
    return ContextPolicy.model_validate(
        {
            "apiVersion": "reconciler.genesys.cloud/v1",
            "kind": "ContextPolicy",
            "metadata": {"name": "pol"},
            "spec": make_policy().model_dump(by_alias=True, exclude_none=True),
        }
    )


def test_preview_never_raises_for_content_problems() -> None:
    good = _prompt("Hi {{ customer }}")
    assert preview_text(good, _policy(), make_conversation()) == "Hi Dana Whitfield"
    assert preview_text(good, _policy(), "not a conversation").startswith(
        "(preview unavailable: conversation:"
    )
    missing = preview_text(_prompt("Hi {{ nobody }}"), None, make_conversation())
    assert missing.startswith(
        "(preview unavailable: prompt 'p': template variable missing: 'nobody' is undefined"
    )
    typed = preview_text(good, None, make_conversation(), {"isVip": "yes please"}, INPUTS)
    assert typed.startswith("(preview unavailable: attribute 'isVip'")


def test_preview_diffs_the_rendered_prompt_before_and_after() -> None:
    diff = preview(
        _prompt("Hi {{ customer }}\nBye"), _prompt("Hello {{ customer }}\nBye"), None, make_conversation()
    )
    assert "-Hi Dana Whitfield" in diff and "+Hello Dana Whitfield" in diff and " Bye" in diff
    assert preview(None, _prompt("Hi"), None, make_conversation()).endswith("+Hi")
    same = preview(_prompt("Hi"), _prompt("Hi"), None, make_conversation())
    assert same == "(rendered prompt unchanged for the sample conversation)"
    broken_after = preview(_prompt("Hi"), _prompt("Hi {{ x }}"), None, make_conversation())
    assert broken_after.startswith("(preview unavailable: ")
    fixed = preview(_prompt("Hi {{ x }}"), _prompt("Hi"), None, make_conversation())
    assert fixed.endswith("+Hi")
