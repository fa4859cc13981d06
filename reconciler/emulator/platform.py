"""The real platform's shapes for the endpoints that are public Genesys Cloud APIs.

``GET /api/v2/flows/{id}``, ``GET /api/v2/conversations/{id}``, ``GET /api/v2/organizations/me``
and the conversation details query exist on every Genesys Cloud org; the LLM Gateway documents
describe them with fields of their own. The emulator serves both: the platform's fields (as the
official SDK, generated from the platform's API definition, parses them) and the documents'
variants beside them, each derived from the other when a fixture has only one. With
``EmulatorConfig.real_shapes_only`` the documents' variants are left out, and a body carries only
fields the platform's own model has (the field lists below), which is what a real org serves.

Pure functions of a fixture record (or a synthetic call record) and the flag. Like the rest of
the emulator, this module shares no code with the client: it is the other side of the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

# The platform models' JSON field names (Flow, Conversation, Participant, Organization), the
# only fields a body keeps when the emulator serves real shapes only.
FLOW_FIELDS = frozenset(
    {
        "id",
        "name",
        "division",
        "description",
        "type",
        "lockedUser",
        "lockedClient",
        "active",
        "system",
        "deleted",
        "publishedVersion",
        "savedVersion",
        "inputSchema",
        "outputSchema",
        "checkedInVersion",
        "debugVersion",
        "publishedBy",
        "currentOperation",
        "nluInfo",
        "supportedLanguages",
        "compatibleFlowTypes",
        "worktypeId",
        "virtualAgentEnabled",
        "selfUri",
    }
)
CONVERSATION_FIELDS = frozenset(
    {
        "id",
        "name",
        "externalTag",
        "startTime",
        "endTime",
        "address",
        "participants",
        "conversationIds",
        "maxParticipants",
        "recordingState",
        "state",
        "divisions",
        "recentTransfers",
        "securePause",
        "utilizationLabelId",
        "inactivityTimeout",
        "selfUri",
    }
)
PARTICIPANT_FIELDS = frozenset(
    {
        "id",
        "startTime",
        "endTime",
        "connectedTime",
        "name",
        "userUri",
        "userId",
        "externalContactId",
        "externalContactInitialDivisionId",
        "externalOrganizationId",
        "queueId",
        "groupId",
        "teamId",
        "queueName",
        "purpose",
        "participantType",
        "consultParticipantId",
        "address",
        "ani",
        "aniName",
        "dnis",
        "locale",
        "wrapupRequired",
        "wrapupPrompt",
        "wrapupTimeoutMs",
        "wrapupSkipped",
        "wrapup",
        "mediaRoles",
        "conversationRoutingData",
        "alertingTimeoutMs",
        "monitoredParticipantId",
        "coachedParticipantId",
        "attributes",
        "calls",
        "callbacks",
        "chats",
        "cobrowsesessions",
        "emails",
        "messages",
        "internalMessages",
        "screenMonitorings",
        "screenshares",
        "socialExpressions",
        "videos",
        "evaluations",
        "screenRecordingState",
        "flaggedReason",
        "startAcwTime",
        "endAcwTime",
        "bargedParticipantId",
    }
)
# A participant's media lists and the channel (the documents' conversation ``type``) each means.
MEDIA_CHANNELS = (
    ("calls", "voice"),
    ("callbacks", "callback"),
    ("chats", "webchat"),
    ("emails", "email"),
    ("messages", "message"),
    ("videos", "video"),
)
# The documents' data types as JSON Schema, and back (an integer is a number; a string with a
# date format is a date).
SCHEMA_OF_TYPE: dict[str, dict[str, str]] = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
}
JSON_SCHEMA_DRAFT = "http://json-schema.org/draft-04/schema#"
# Architect refers to a flow's variables as ``Flow.<name>``; a schema property keeping the
# prefix names the input ``<name>`` (as the client reads it too).
FLOW_PREFIX = "Flow."


def _only(body: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k in fields}


# --- flows -----------------------------------------------------------------------------------


def input_schema(name: str, definitions: list[Any]) -> dict[str, Any]:
    """The documents' ``inputDefinitions`` as the JSON schema the platform puts in ``inputSchema``."""
    properties: dict[str, Any] = {}
    for d in definitions:
        if not isinstance(d, Mapping) or not d.get("name"):
            continue
        schema = dict(SCHEMA_OF_TYPE.get(str(d.get("dataType", "string")), {"type": "string"}))
        if d.get("description"):
            schema["description"] = str(d["description"])
        properties[str(d["name"])] = schema
    return {
        "$schema": JSON_SCHEMA_DRAFT,
        "title": f"{name} inputs",
        "type": "object",
        "properties": properties,
        "additionalProperties": True,
    }


def _data_type(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return "string"
    declared = schema.get("type", "string")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), "string")
    if declared in ("integer", "number"):
        return "number"
    if declared == "boolean":
        return "boolean"
    if declared == "string" and schema.get("format") in ("date", "date-time"):
        return "date"
    return "string"


def input_definitions(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A flow's ``inputSchema`` as the documents' ``inputDefinitions``."""
    properties = schema.get("properties")
    out: list[dict[str, Any]] = []
    for name, property_schema in (properties if isinstance(properties, Mapping) else {}).items():
        item: dict[str, Any] = {
            "name": str(name).removeprefix(FLOW_PREFIX),
            "dataType": _data_type(property_schema),
        }
        if isinstance(property_schema, Mapping) and property_schema.get("description"):
            item["description"] = str(property_schema["description"])
        out.append(item)
    return out


def complete_flow(fixture: Mapping[str, Any]) -> dict[str, Any]:
    """A flow fixture with both shapes: ``inputSchema`` and ``inputDefinitions``, each derived
    from the other when the fixture has only one. What the emulator stores (and validates
    context policies' attribute mappings against)."""
    flow = dict(fixture)
    definitions = flow.get("inputDefinitions")
    schema = flow.get("inputSchema")
    if not isinstance(schema, Mapping):
        flow["inputSchema"] = input_schema(str(flow.get("name") or flow.get("id")), definitions or [])
    if not isinstance(definitions, list):
        flow["inputDefinitions"] = input_definitions(flow["inputSchema"])
    flow.setdefault("selfUri", f"/api/v2/flows/{flow.get('id')}")
    return flow


def flow_body(flow: Mapping[str, Any], real_only: bool) -> dict[str, Any]:
    """``GET /api/v2/flows/{id}``: a completed flow, without ``inputDefinitions`` when real only."""
    return _only(flow, FLOW_FIELDS) if real_only else dict(flow)


# --- conversations ---------------------------------------------------------------------------


def _earliest(messages: Any) -> str | None:
    moments: list[tuple[datetime, str]] = []
    for m in messages if isinstance(messages, list) else []:
        stamp = m.get("timestamp") if isinstance(m, Mapping) else None
        if isinstance(stamp, str):
            try:
                moment = datetime.fromisoformat(stamp)
            except ValueError:
                continue
            moments.append((moment if moment.tzinfo else moment.replace(tzinfo=UTC), stamp))
    return min(moments)[1] if moments else None


def complete_conversation(fixture: Mapping[str, Any]) -> dict[str, Any]:
    """A conversation fixture with both shapes. The platform's: participants with ``purpose``,
    ``name``, ``queueId``/``queueName`` and media lists, ``startTime``, ``selfUri``. The
    documents': ``type``, participants with ``role``, ``routing.queue`` and the top-level
    ``messages``. Each is derived from the other where the fixture lacks it."""
    conversation = dict(fixture)
    participants = [dict(p) for p in conversation.get("participants") or [] if isinstance(p, Mapping)]
    for p in participants:
        if not p.get("purpose") and p.get("role"):
            p["purpose"] = p["role"]
        if not p.get("role") and p.get("purpose") in ("customer", "agent"):
            p["role"] = p["purpose"]
    conversation["participants"] = participants
    queued = next((p for p in participants if p.get("queueId") or p.get("queueName")), None)
    if "routing" not in conversation and queued is not None:
        conversation["routing"] = {"queue": {"id": queued.get("queueId"), "name": queued.get("queueName")}}
    routing = conversation.get("routing")
    queue = routing.get("queue") if isinstance(routing, Mapping) else None
    if isinstance(queue, Mapping) and queue and queued is None:
        participants.append(
            {
                "id": f"p-acd-{conversation.get('id')}",
                "name": queue.get("name"),
                "purpose": "acd",
                "queueId": queue.get("id"),
                "queueName": queue.get("name"),
            }
        )
    if "type" not in conversation:
        channel = next(
            (c for p in participants for key, c in MEDIA_CHANNELS if isinstance(p.get(key), list) and p[key]),
            None,
        )
        if channel is not None:
            conversation["type"] = channel
    start = _earliest(conversation.get("messages"))
    if start is not None:
        conversation.setdefault("startTime", start)
    conversation.setdefault("selfUri", f"/api/v2/conversations/{conversation.get('id')}")
    return conversation


def conversation_body(conversation: Mapping[str, Any], real_only: bool) -> dict[str, Any]:
    """``GET /api/v2/conversations/{id}``: real only, the platform's fields and nothing else
    (no ``type``, ``routing``, top-level ``messages``; no participant ``role`` or ``state``)."""
    if not real_only:
        return dict(conversation)
    body = _only(conversation, CONVERSATION_FIELDS)
    body["participants"] = [
        _only(p, PARTICIPANT_FIELDS) for p in body.get("participants") or [] if isinstance(p, Mapping)
    ]
    return body


# --- organizations/me ------------------------------------------------------------------------


def organization_body(org_id: str) -> dict[str, Any]:
    """``GET /api/v2/organizations/me``: the documents add nothing here."""
    return {
        "id": org_id,
        "name": "Emulated organization",
        "state": "active",
        "selfUri": f"/api/v2/organizations/{org_id}",
    }


# --- the conversation details query ----------------------------------------------------------

AI_METRICS = ("aiLatency", "aiTokensUsed", "aiSuccessRate")


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def analytics_conversation(record: Mapping[str, Any]) -> dict[str, Any]:
    """One synthetic LLM call (the documents' flat record) as the platform's conversation
    detail: a bot-flow participant whose session carries the call's numbers as session metrics
    and the prompt (and variant) as segment properties, the platform's place for custom values."""
    start = _instant(str(record["conversationStart"]))
    latency = record.get("aiLatency")
    end = start + timedelta(milliseconds=latency if isinstance(latency, int | float) else 0)
    emitted = _iso(end)
    metrics = [
        {"name": name, "value": int(record[name]), "emitDate": emitted}
        for name in AI_METRICS
        if isinstance(record.get(name), int | float)
    ]
    properties = [
        {"property": key, "propertyType": "string", "value": str(record[key])}
        for key in ("aiPromptId", "aiPromptVariant")
        if record.get(key)
    ]
    conversation_id = str(record["conversationId"])
    return {
        "conversationId": conversation_id,
        "conversationStart": _iso(start),
        "conversationEnd": emitted,
        "originatingDirection": "inbound",
        "participants": [
            {
                "participantId": f"{conversation_id}-bot",
                "purpose": "botflow",
                "sessions": [
                    {
                        "sessionId": f"{conversation_id}-llm",
                        "mediaType": "message",
                        "metrics": metrics,
                        "segments": [
                            {
                                "segmentStart": _iso(start),
                                "segmentEnd": emitted,
                                "segmentType": "interact",
                                "properties": properties,
                            }
                        ],
                    }
                ],
            }
        ],
    }
