"""The real platform endpoints' two shapes: the platform's and the documents' variants.

Fixtures may carry either shape of a flow or a conversation; the emulator serves both (each
derived from the other) and, with ``real_shapes_only``, the platform's alone. The client reads
a flow's inputs from either (``kinds.flow_inputs_from``) to the same result.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.client.connect import Connection, open_client
from reconciler.client.http import Credentials
from reconciler.emulator.config import DEFAULT_FIXTURES, EmulatorConfig
from reconciler.emulator.server import free_port, running_emulator
from reconciler.errors import RenderError
from reconciler.kinds import flow_inputs_from
from reconciler.prompting import flatten_conversation
from tests.conftest import CLIENT_ID, CLIENT_SECRET, Org, run

# A flow as a real org describes it: a JSON schema only (Architect's Flow. prefix included),
# with the types the documents map: integer -> number, date and date-time strings -> date.
SCHEMA_ONLY_FLOW = {
    "id": "flow-schema-only",
    "name": "Schema only",
    "type": "inboundchat",
    "inputSchema": {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {
            "Flow.orderCount": {"type": "integer"},
            "Flow.amount": {"type": "number"},
            "Flow.isVip": {"type": "boolean"},
            "Flow.since": {"type": "string", "format": "date"},
            "Flow.lastSeen": {"type": "string", "format": "date-time"},
            "Flow.note": {"type": ["string", "null"]},
        },
    },
}
SCHEMA_ONLY_INPUTS = {
    "orderCount": "number",
    "amount": "number",
    "isVip": "boolean",
    "since": "date",
    "lastSeen": "date",
    "note": "string",
}
# A conversation as a real org serves it: no type, routing, transcript or participant roles.
PLATFORM_ONLY_CONVERSATION = {
    "id": "conv-platform",
    "state": "connected",
    "participants": [
        {"id": "c", "name": "Ada", "purpose": "customer", "messages": [{"id": "m1", "state": "connected"}]},
        {"id": "q", "name": "Returns", "purpose": "acd", "queueId": "q-ret", "queueName": "Returns"},
        {"id": "a", "name": "Lin", "purpose": "agent", "queueId": "q-ret", "queueName": "Returns"},
    ],
}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default fixtures plus a schema-only flow and a platform-only conversation."""
    folder = tmp_path_factory.mktemp("fixtures")
    for name in ("models.json", "metrics.json"):
        (folder / name).write_text((DEFAULT_FIXTURES / name).read_text())
    flows = json.loads((DEFAULT_FIXTURES / "flows.json").read_text())
    (folder / "flows.json").write_text(json.dumps([*flows, SCHEMA_ONLY_FLOW]))
    conversations = json.loads((DEFAULT_FIXTURES / "conversations.json").read_text())
    (folder / "conversations.json").write_text(json.dumps([*conversations, PLATFORM_ONLY_CONVERSATION]))
    return folder


def _org(fixtures: Path, real_only: bool) -> Any:
    return running_emulator(
        EmulatorConfig(
            db=":memory:", fixtures=fixtures, rate_limit_per_minute=100_000, real_shapes_only=real_only
        )
    )


def _client_flow_inputs(url: str, flow_id: str) -> dict[str, str] | None:
    """What our client reads of a live flow."""

    async def fetch() -> dict[str, str] | None:
        credentials = Credentials(CLIENT_ID, CLIENT_SECRET)
        async with open_client(Connection("test", url, url, credentials, {})) as client:
            return await client.flow_inputs(flow_id)

    result: dict[str, str] | None = run(fetch())
    return result


@pytest.mark.parametrize("real_only", [False, True], ids=["default", "real-shapes-only"])
def test_the_client_reads_every_flow_the_same_in_both_modes(fixtures: Path, real_only: bool) -> None:
    with _org(fixtures, real_only) as url:
        org = Org(url)
        billing = org.api("GET", "/api/v2/flows/flow-billing-intake").json()
        schema_only = org.api("GET", "/api/v2/flows/flow-schema-only").json()
        assert ("inputDefinitions" in billing) is not real_only
        assert billing["inputSchema"]["properties"]["isVip"] == {
            "type": "boolean",
            "description": "VIP handling",
        }
        assert _client_flow_inputs(url, "flow-billing-intake") == {
            "customerTier": "string",
            "accountBalance": "number",
            "isVip": "boolean",
            "lastPaymentDate": "date",
        }
        assert _client_flow_inputs(url, "flow-schema-only") == SCHEMA_ONLY_INPUTS
        assert _client_flow_inputs(url, "no-such-flow") is None
        if not real_only:
            # The documents' variant derived from the schema says the same.
            derived = {d["name"]: d["dataType"] for d in schema_only["inputDefinitions"]}
            assert derived == SCHEMA_ONLY_INPUTS
        else:
            assert set(schema_only) == {"id", "name", "type", "inputSchema", "selfUri"}


def test_a_policy_is_validated_against_a_schema_only_flow(fixtures: Path) -> None:
    """The emulator's own attribute-mapping check reads the derived definitions."""
    with _org(fixtures, True) as url:
        org = Org(url)
        policy = {
            "id": "policy-schema",
            "model_id": "genesys-llm-v4",
            "token_limit_matrix": {"soft_limit": 1000, "hard_limit": 2000},
            "flow_id": "flow-schema-only",
            "attribute_mappings": [{"source": "crm.count", "attribute": "orderCount", "data_type": "string"}],
        }
        refused = org.api("PUT", "/api/v2/ai/llm/context-policies/policy-schema", policy)
        assert refused.status_code == 400, refused.text
        assert "number" in refused.json()["message"]
        policy["attribute_mappings"][0]["data_type"] = "number"
        assert org.api("PUT", "/api/v2/ai/llm/context-policies/policy-schema", policy).status_code == 201


@pytest.mark.parametrize("real_only", [False, True], ids=["default", "real-shapes-only"])
def test_conversations_carry_the_platforms_fields_and_the_documents_beside_them(
    fixtures: Path, real_only: bool
) -> None:
    with _org(fixtures, real_only) as url:
        org = Org(url)
        documents_first = org.api("GET", "/api/v2/conversations/conv-1001").json()
        platform_first = org.api("GET", "/api/v2/conversations/conv-platform").json()
    assert documents_first["startTime"] == "2026-11-20T09:00:00Z"
    assert documents_first["selfUri"] == "/api/v2/conversations/conv-1001"
    if real_only:
        for body in (documents_first, platform_first):
            assert not {"type", "routing", "messages"} & set(body)
            assert all(not {"role", "state"} & set(p) for p in body["participants"])
    else:
        # The documents' variants, derived where the fixture had only the platform's shape.
        assert documents_first["messages"] and documents_first["routing"]["queue"]["name"] == "Billing"
        assert platform_first["routing"] == {"queue": {"id": "q-ret", "name": "Returns"}}
        assert platform_first["type"] == "message"
        assert [p.get("role") for p in platform_first["participants"]] == ["customer", None, "agent"]
    metadata, _ = flatten_conversation(platform_first)
    assert (metadata["queue"], metadata["agent"], metadata["customer"]) == ("Returns", "Lin", "Ada")


def test_flow_inputs_from_reads_the_platforms_schema_first() -> None:
    flow = {"id": "f", "name": "F", **SCHEMA_ONLY_FLOW}
    assert flow_inputs_from(flow) == SCHEMA_ONLY_INPUTS
    assert flow_inputs_from(SCHEMA_ONLY_FLOW["inputSchema"]) == SCHEMA_ONLY_INPUTS
    # inputSchema wins over inputDefinitions; without a schema, the definitions are read.
    both = {**flow, "inputDefinitions": [{"name": "other", "dataType": "string"}]}
    assert flow_inputs_from(both) == SCHEMA_ONLY_INPUTS
    assert flow_inputs_from({"id": "f", "name": "F", "inputDefinitions": [{"name": "x"}]}) == {"x": "string"}
    assert flow_inputs_from({"id": "f", "name": "F", "inputSchema": None}) == {}
    # Collections and JSON inputs keep their JSON type, so a check names what they are.
    collection = {"properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
    assert flow_inputs_from(collection) == {"tags": "array"}
    with pytest.raises(RenderError, match="'odd' has type 'decimal'"):
        flow_inputs_from({"properties": {"odd": {"type": "decimal"}}})
    with pytest.raises(RenderError, match=r"inputSchema\.properties must be an object"):
        flow_inputs_from({"inputSchema": {"properties": ["x"]}})
    with pytest.raises(RenderError, match="expected a JSON list"):
        flow_inputs_from({"a": "string"})


def test_the_committed_samples_may_be_a_flow_as_the_platform_serves_it(tmp_path: Path) -> None:
    from reconciler.previews import sample_flow_inputs

    flows = tmp_path / "samples" / "flows"
    flows.mkdir(parents=True)
    (flows / "flow-schema-only.json").write_text(json.dumps(SCHEMA_ONLY_FLOW))
    assert sample_flow_inputs(tmp_path, "flow-schema-only") == SCHEMA_ONLY_INPUTS


def test_serve_real_shapes_only_from_the_command_line(tmp_path: Path) -> None:
    port = free_port()
    # The installed console script, next to this interpreter.
    command = [str(Path(sys.executable).parent / "reconciler"), "emulator", "serve", "--real-shapes-only"]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--db", ":memory:"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "the emulator did not start"
                time.sleep(0.05)
        flow = Org(url).api("GET", "/api/v2/flows/flow-billing-intake").json()
        assert "inputSchema" in flow and "inputDefinitions" not in flow
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=10)
    assert b"platform's shapes only" in output
