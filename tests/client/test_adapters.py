"""The per-kind wire mapping: a round trip through the wire must show no difference."""

from __future__ import annotations

from typing import Any

from reconciler.kinds import adapter_for
from reconciler.models import Kind

FUNCTION_SPEC: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "timeoutMillis": 5000,
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "units": {"type": "string", "enum": ["metric", "imperial"], "maxLength": 10},
            "days": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city"],
    },
}


def test_function_server_default_max_length_applies_at_every_depth() -> None:
    spec = adapter_for(Kind.FUNCTION_DEFINITION).with_server_defaults(FUNCTION_SPEC)
    props = spec["parameters"]["properties"]
    assert props["city"]["maxLength"] == 255
    assert props["units"]["maxLength"] == 10  # an explicit value is kept
    assert props["days"]["items"]["maxLength"] == 255
    assert "maxLength" not in props["days"]  # arrays are not strings


def test_function_wire_round_trip() -> None:
    adapter = adapter_for(Kind.FUNCTION_DEFINITION)
    body = adapter.to_wire("func-weather", FUNCTION_SPEC, {"team": "a"})
    assert body["id"] == "func-weather"
    stored = {**body, "version": 3, "etag": '"e1"', "selfUri": "/x", "modifiedBy": "someone"}
    live = adapter.from_wire(stored)
    assert live.key.name == "func-weather"
    assert live.etag == '"e1"'
    assert live.modified_by == "someone"
    assert live.spec == adapter.with_server_defaults(FUNCTION_SPEC) or live.spec == FUNCTION_SPEC
    assert "version" not in live.spec and "etag" not in live.spec


def test_context_policy_uses_snake_case_on_the_wire_and_ratio_becomes_soft_limit() -> None:
    adapter = adapter_for(Kind.CONTEXT_POLICY)
    spec = {
        "modelId": "genesys-llm-v4",
        "tokenLimits": {"hardLimit": 8000, "softLimitRatio": 0.75},
        "retention": {"evictionPolicy": "fifo"},
        "attributeMappings": [{"source": "crm.tier", "attribute": "customerTier", "dataType": "string"}],
    }
    body = adapter.to_wire("policy-a", spec, {})
    assert body["token_limit_matrix"] == {"hard_limit": 8000, "soft_limit": 6000}
    assert body["memory_retention_directives"]["eviction_policy"] == "fifo"
    assert body["attribute_mappings"][0]["data_type"] == "string"
    live = adapter.from_wire({**body, "etag": '"1"'})
    assert live.spec == adapter.with_server_defaults(spec)


def test_prompt_maps_context_policy_name_to_id_field() -> None:
    adapter = adapter_for(Kind.PROMPT)
    spec = {
        "version": "1.0.0",
        "modelId": "genesys-llm-v4",
        "maxTokens": 1000,
        "template": "Hi {{ name }}",
        "variables": [{"name": "name", "required": True}],
        "contextPolicy": "policy-a",
    }
    body = adapter.to_wire("greeter", spec, {})
    assert body["name"] == "greeter" and body["contextPolicyId"] == "policy-a"
    assert "contextPolicy" not in body
    live = adapter.from_wire({**body, "id": "5f0c", "revision": 2, "etag": '"x"'})
    assert live.id == "5f0c" and live.key.name == "greeter"
    assert live.spec == adapter.with_server_defaults(spec)


def test_live_data_the_model_rejects_is_kept_not_hidden() -> None:
    adapter = adapter_for(Kind.FUNCTION_DEFINITION)
    live = adapter.from_wire(
        {
            "id": "f",
            "name": "f",
            "description": "d",
            "timeoutMillis": "soon",
            "parameters": {"type": "object"},
        }
    )
    assert live.spec["timeoutMillis"] == "soon"
