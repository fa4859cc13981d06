"""The emulator's real Genesys Cloud endpoints, driven by the official SDK.

Each test runs against both emulators (see conftest): the default one must serve what the SDK
parses and the documents' variants beside it; the real-shapes-only one must serve nothing the
platform's own models do not have, at any depth. Our readers (``flow_inputs_from``,
``flatten_conversation``) are fed what the SDK parsed, so they are checked on the real shapes.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import httpx
import PureCloudPlatformClientV2 as sdk
import pytest
from PureCloudPlatformClientV2.rest import ApiException

from reconciler.kinds import flow_inputs_from
from reconciler.prompting import flatten_conversation
from tests.sdk.conftest import error_body, login, raw_body

BILLING_INPUTS = {
    "customerTier": "string",
    "accountBalance": "number",
    "isVip": "boolean",
    "lastPaymentDate": "date",
}
LIST_TYPE = re.compile(r"list\[(\w+)\]")
QUERY_PATH = "/api/v2/analytics/conversations/details/query"


def unknown_fields(body: Any, model: str, where: str = "") -> set[str]:
    """Every field of ``body`` (a JSON object) that the SDK's ``model`` does not have, walking
    nested models and lists of models, as dotted paths."""
    instance = getattr(sdk, model)()
    by_json = {json_name: instance.swagger_types[attr] for attr, json_name in instance.attribute_map.items()}
    out: set[str] = set()
    for key, value in body.items():
        path = f"{where}{key}"
        if key not in by_json:
            out.add(path)
            continue
        declared = by_json[key]
        listed = LIST_TYPE.fullmatch(declared)
        inner = listed.group(1) if listed else declared
        if not hasattr(sdk, inner):
            continue  # a primitive, a date or a free-form object
        for item in value if listed else [value]:
            if isinstance(item, dict):
                out |= unknown_fields(item, inner, f"{path}.")
    return out


def documents_only(real_only: bool, fields: set[str]) -> set[str]:
    """What the emulator may serve beyond the platform's model: nothing when real only."""
    return set() if real_only else fields


# --- OAuth and organizations/me ------------------------------------------------------------------


def test_the_sdk_logs_in_with_client_credentials(emulator: tuple[str, bool]) -> None:
    url, _ = emulator
    api = login(url)
    assert len(api.access_token) > 20
    org = sdk.OrganizationApi(api).get_organizations_me()
    assert isinstance(org, sdk.Organization)
    assert org.id and org.name == "Emulated organization" and org.state == "active"
    assert org.self_uri == f"/api/v2/organizations/{org.id}"
    assert unknown_fields(raw_body(api), "Organization") == set()


def test_bad_client_credentials_are_refused_as_the_platform_refuses_them(emulator: tuple[str, bool]) -> None:
    url, _ = emulator
    with pytest.raises(ApiException) as caught:
        login(url, secret="wrong-secret")
    assert caught.value.status == 401
    assert json.loads(caught.value.body)["error"] == "invalid_client"
    assert caught.value.headers["WWW-Authenticate"].startswith("Basic ")


# --- flows ---------------------------------------------------------------------------------------


def test_a_flow_describes_its_inputs_as_a_json_schema(emulator: tuple[str, bool]) -> None:
    url, real_only = emulator
    api = login(url)
    flow = sdk.ArchitectApi(api).get_flow("flow-billing-intake")
    assert isinstance(flow, sdk.Flow) and flow.name == "Billing intake"
    schema = flow.input_schema
    assert schema["type"] == "object"
    assert schema["properties"]["lastPaymentDate"] == {
        "type": "string",
        "format": "date",
        "description": "Date of the last payment",
    }
    # Our one reader of flow inputs, fed only what the SDK parsed.
    assert flow_inputs_from({"inputSchema": schema}) == BILLING_INPUTS
    body = raw_body(api)
    assert unknown_fields(body, "Flow") == documents_only(real_only, {"inputDefinitions"})
    if not real_only:
        # The documents' variant says the same as the schema.
        assert flow_inputs_from(body["inputDefinitions"]) == BILLING_INPUTS


def test_a_flow_without_the_documents_variant_reads_the_same(emulator: tuple[str, bool]) -> None:
    url, _ = emulator
    api = login(url)
    sdk.ArchitectApi(api).get_flow("flow-order-support")
    body = raw_body(api)
    assert flow_inputs_from(body) == {"orderId": "string", "orderTotal": "number"}
    real_only_body = {k: v for k, v in body.items() if k != "inputDefinitions"}
    assert flow_inputs_from(real_only_body) == flow_inputs_from(body)


# --- conversations -------------------------------------------------------------------------------


def test_conversation_participants_have_the_platforms_fields(emulator: tuple[str, bool]) -> None:
    url, real_only = emulator
    api = login(url)
    conversation = sdk.ConversationsApi(api).get_conversation("conv-1001")
    assert isinstance(conversation, sdk.Conversation) and conversation.state == "connected"
    by_purpose = {p.purpose: p for p in conversation.participants}
    assert set(by_purpose) == {"customer", "acd", "agent"}
    assert by_purpose["customer"].name == "Dana Whitfield"
    assert by_purpose["agent"].name == "Sam Okafor"
    assert (by_purpose["acd"].queue_id, by_purpose["acd"].queue_name) == ("q-billing", "Billing")
    assert [c.state for c in by_purpose["agent"].chats] == ["connected"]
    body = raw_body(api)
    documents = {"type", "routing", "messages"} | {f"participants.{field}" for field in ("role", "state")}
    assert unknown_fields(body, "Conversation") == documents_only(real_only, documents)


@pytest.mark.parametrize("conversation_id", ["conv-1001", "conv-1002"])
def test_conversation_metadata_reads_the_same_from_what_the_sdk_keeps(
    emulator: tuple[str, bool], conversation_id: str
) -> None:
    """``flatten_conversation`` on the SDK's parsed model (serialized back to the platform's
    JSON) gives the metadata the documents' shape gives: channel, state, queue, agent, customer."""
    url, real_only = emulator
    api = login(url)
    parsed = sdk.ConversationsApi(api).get_conversation(conversation_id)
    platform_only = api.sanitize_for_serialization(parsed)
    metadata, messages = flatten_conversation(platform_only)
    documents = None if real_only else raw_body(api)
    assert messages == []  # the platform's conversation carries no transcript
    assert metadata["conversationId"] == conversation_id
    assert metadata["state"] == "connected"
    assert metadata["channel"] == {"conv-1001": "chat", "conv-1002": "voice"}[conversation_id]
    assert metadata["queue"] and metadata["agent"] and metadata["customer"]
    if documents is not None:
        assert flatten_conversation(documents)[0] == metadata


# --- the conversation details query -------------------------------------------------------------


def _query(interval: str | None, page_size: int = 10) -> Any:
    query = sdk.ConversationQuery()
    if interval is not None:
        query.interval = interval
    paging = sdk.PagingSpec()
    paging.page_size, paging.page_number = page_size, 1
    query.paging = paging
    return query


def _interval() -> str:
    now = time.time()
    start = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 3600))
    end = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now + 60))
    return f"{start}/{end}"


def test_the_sdks_details_query_gets_conversations_with_the_llm_metrics(emulator: tuple[str, bool]) -> None:
    url, real_only = emulator
    api = login(url)
    analytics = sdk.ConversationsApi(api)
    deadline = time.monotonic() + 5
    while True:  # the probe prompt's synthetic calls accrue from its creation on
        answer = analytics.post_analytics_conversations_details_query(_query(_interval()))
        if answer.total_hits >= 10 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert isinstance(answer, sdk.AnalyticsConversationQueryResponse)
    assert answer.total_hits >= 10 and len(answer.conversations) == 10
    first = answer.conversations[0]
    assert first.conversation_start <= first.conversation_end
    session = first.participants[0].sessions[0]
    metrics = {m.name: m.value for m in session.metrics}
    assert set(metrics) == {"aiLatency", "aiTokensUsed", "aiSuccessRate"}
    assert metrics["aiLatency"] > 0 and metrics["aiTokensUsed"] > 0 and metrics["aiSuccessRate"] in (0, 1)
    properties = {p.pcProperty: p.value for p in session.segments[0].properties}
    body = raw_body(api)
    assert unknown_fields(body, "AnalyticsConversationQueryResponse") == documents_only(
        real_only, {"entities", "pageSize", "pageNumber", "interval", "nextPageUri"}
    )
    if not real_only:
        # The documents' flat records, beside the platform's conversations, say the same.
        entity = body["entities"][0]
        assert entity["conversationId"] == first.conversation_id
        assert entity["aiPromptId"] == properties["aiPromptId"]
        assert entity["aiLatency"] == metrics["aiLatency"]


def _post(api: Any, body: dict[str, Any]) -> Any:
    """A raw JSON POST of the details query through the SDK's own client (its auth, its errors)."""
    return api.call_api(
        QUERY_PATH,
        "POST",
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body=body,
        response_type="object",
        auth_settings=["PureCloud OAuth"],
    )


def test_the_documents_query_is_answered_unless_real_shapes_only(emulator: tuple[str, bool]) -> None:
    url, real_only = emulator
    api = login(url)
    answer = sdk.ConversationsApi(api).post_analytics_conversations_details_query(_query(_interval()))
    prompt_id = answer.conversations[0].participants[0].sessions[0].segments[0].properties[0].value
    date_from, date_to = _interval().split("/")
    documents_query = {
        "dateFrom": date_from,
        "dateTo": date_to,
        "view": "ai_llm_gateway",
        "filters": [{"type": "aiPromptId", "values": [prompt_id]}],
        "metrics": ["aiLatency"],
    }
    if real_only:
        # The platform knows no dateFrom/dateTo: without its required interval, a 400 naming it.
        with pytest.raises(ApiException) as caught:
            _post(api, documents_query)
        assert caught.value.status == 400
        assert [d.field_name for d in error_body(api, caught.value.body).details] == ["interval"]
        return
    documents_answer = _post(api, documents_query)
    entity = documents_answer["entities"][0]
    assert set(entity) == {"conversationId", "conversationStart", "aiPromptId", "aiLatency"}
    assert entity["aiPromptId"] == prompt_id


# --- errors --------------------------------------------------------------------------------------


def test_a_404_parses_into_the_sdks_error_body(emulator: tuple[str, bool]) -> None:
    url, _ = emulator
    api = login(url)
    with pytest.raises(ApiException) as caught:
        sdk.ArchitectApi(api).get_flow("no-such-flow")
    exc = caught.value
    assert exc.status == 404
    error = error_body(api, exc.body)
    assert isinstance(error, sdk.ErrorBody)
    assert (error.status, error.code) == (404, "not.found")
    assert "no-such-flow" in error.message
    assert error.context_id and exc.headers["ININ-Correlation-Id"] == error.context_id


def test_a_400_carries_details_naming_the_field(emulator: tuple[str, bool]) -> None:
    url, _ = emulator
    api = login(url)
    analytics = sdk.ConversationsApi(api)
    with pytest.raises(ApiException) as missing:
        analytics.post_analytics_conversations_details_query(_query(None))
    with pytest.raises(ApiException) as oversized:
        analytics.post_analytics_conversations_details_query(_query(_interval(), page_size=0))
    for exc, field in ((missing.value, "interval"), (oversized.value, "pageSize")):
        assert exc.status == 400
        error = error_body(api, exc.body)
        assert error.code == "invalid.value"
        assert [(d.error_code, d.field_name) for d in error.details] == [("invalid.value", field)]


def test_a_401_for_a_bad_token(emulator: tuple[str, bool]) -> None:
    url, _ = emulator
    api = sdk.ApiClient(host=url)
    api.access_token = "not-a-token"
    with pytest.raises(ApiException) as caught:
        sdk.OrganizationApi(api).get_organizations_me()
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer ")
    error = error_body(api, caught.value.body)
    assert (error.status, error.code) == (401, "bad.credentials")


def test_a_429_is_retried_by_the_sdk_after_retry_after(emulator: tuple[str, bool]) -> None:
    """The SDK (through urllib3) waits the Retry-After seconds of a 429 and tries again."""
    url, _ = emulator
    api = login(url)
    before = httpx.get(f"{url}/__emulator/stats", timeout=10).json()["throttled"]
    httpx.put(f"{url}/__emulator/faults", json={"fail": {"429": 1.0}, "retry_after_s": 1}, timeout=10)

    def lift_after_the_first_429() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if httpx.get(f"{url}/__emulator/stats", timeout=10).json()["throttled"] > before:
                break
            time.sleep(0.01)
        httpx.put(f"{url}/__emulator/faults", json={}, timeout=10)

    lifter = threading.Thread(target=lift_after_the_first_429)
    lifter.start()
    started = time.monotonic()
    try:
        org = sdk.OrganizationApi(api).get_organizations_me()
    finally:
        lifter.join()
    elapsed = time.monotonic() - started
    assert org.id
    assert api.last_response.status == 200
    assert elapsed >= 1.0  # it waited the Retry-After second before trying again
    assert httpx.get(f"{url}/__emulator/stats", timeout=10).json()["throttled"] > before


def test_a_429_carries_retry_after_and_the_platforms_message(emulator: tuple[str, bool]) -> None:
    url, _ = emulator
    api = login(url)
    httpx.put(f"{url}/__emulator/faults", json={"fail": {"429": 1.0}, "retry_after_s": 3}, timeout=10)
    try:
        response = httpx.get(
            f"{url}/api/v2/organizations/me",
            headers={"Authorization": f"Bearer {api.access_token}"},
            timeout=10,
        )
    finally:
        httpx.put(f"{url}/__emulator/faults", json={}, timeout=10)
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    error = error_body(api, response.text)
    assert (error.status, error.code) == (429, "too.many.requests")
    assert error.message == "Rate limit exceeded the maximum. Retry the request in [3] seconds"
