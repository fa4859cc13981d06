"""One adapter per kind: everything that differs between kinds on the wire, in one place each.

An adapter knows its kind's paths, scopes, id strategy (PUT-upsert with a client-assigned id, or
POST-create with a server-assigned id and a unique name), wire casing <-> manifest casing, the
fields the server manages, and the defaults the server fills in. If the real service differs
from docs/API.md in any of these, the change is confined to one class here. Flows (a real
platform API, not one of our kinds) are read here too: their inputs are wire mapping as well.

Adapters are pure (no I/O), so the planner may use them to apply server defaults to desired state.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ValidationError

from reconciler.errors import RenderError
from reconciler.models import (
    ContextPolicySpec,
    FunctionDefinitionSpec,
    Kind,
    LiveResource,
    PromptSpec,
    ResourceKey,
)

# Length the service stores on a string parameter that declares no maxLength (docs/API.md).
DEFAULT_STRING_MAX_LENGTH = 255

IdStrategy = Literal["put", "post"]


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _canonical_spec(model: type[BaseModel], spec: dict[str, Any]) -> dict[str, Any]:
    """Run a spec through its model so model defaults appear the same on both sides of a diff.

    Live data the model rejects (someone wrote something odd out of band) is kept as it is, so
    the diff shows it rather than hiding it.
    """
    try:
        parsed = model.model_validate(spec)
    except ValidationError:
        return _drop_none(spec)  # type: ignore[no-any-return]
    return parsed.model_dump(mode="json", by_alias=True, exclude_none=True)


class KindAdapter(ABC):
    """The wire contract of one kind."""

    kind: ClassVar[Kind]
    collection_path: ClassVar[str]
    read_scope: ClassVar[str]
    write_scope: ClassVar[str]
    id_strategy: ClassVar[IdStrategy]
    spec_model: ClassVar[type[BaseModel]]
    # Fields the server sets; never part of desired state, never sent.
    server_managed: ClassVar[frozenset[str]] = frozenset(
        {"id", "selfUri", "etag", "dateCreated", "dateModified", "modifiedBy"}
    )

    def item_path(self, resource_id: str) -> str:
        return f"{self.collection_path}/{resource_id}"

    @abstractmethod
    def to_wire(self, name: str, spec: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
        """The request body that stores ``spec`` (manifest casing) under ``name``."""

    @abstractmethod
    def spec_from_wire(self, body: dict[str, Any]) -> dict[str, Any]:
        """The spec part of a wire body, in manifest casing, server-managed fields dropped."""

    @abstractmethod
    def name_from_wire(self, body: dict[str, Any]) -> str:
        """The resource's identity (metadata.name) from a wire body."""

    def with_server_defaults(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Desired spec as the service will store it, so a round trip shows no diff."""
        return self.server_fills(_canonical_spec(self.spec_model, spec))

    def server_fills(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec``, a dump of this kind's model, with what the service fills in on a write."""
        return spec

    def canonical_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec`` (manifest casing) through this kind's model (see ``_canonical_spec``)."""
        return _canonical_spec(self.spec_model, spec)

    def from_wire(self, body: dict[str, Any]) -> LiveResource:
        """The live resource a wire body describes; its canonical spec is made when first used."""
        name = self.name_from_wire(body)
        return LiveResource(
            key=ResourceKey(self.kind, name),
            id=str(body.get("id", name)),
            etag=str(body.get("etag", "")),
            spec=self.spec_from_wire(body),
            labels=dict(body.get("labels") or {}),
            modified_by=body.get("modifiedBy"),
            date_modified=body.get("dateModified"),
            canonical=self.canonical_spec,
        )


def _default_string_lengths(schema: Any) -> Any:
    """Add maxLength 255 to every string schema without one, at any depth (the service does)."""
    if isinstance(schema, list):
        return [_default_string_lengths(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _default_string_lengths(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _default_string_lengths(out["items"])
    if out.get("type") == "string" and "maxLength" not in out:
        out["maxLength"] = DEFAULT_STRING_MAX_LENGTH
    return out


class FunctionDefinitionAdapter(KindAdapter):
    kind = Kind.FUNCTION_DEFINITION
    collection_path = "/api/v2/ai/llm/function-definitions"
    read_scope = "ai:llm:function-definition:read"
    write_scope = "ai:llm:function-definition:write"
    id_strategy: ClassVar[IdStrategy] = "put"
    spec_model = FunctionDefinitionSpec
    server_managed = KindAdapter.server_managed | {"version"}

    def to_wire(self, name: str, spec: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
        return {"id": name, **spec, "labels": labels}

    def spec_from_wire(self, body: dict[str, Any]) -> dict[str, Any]:
        return {k: body[k] for k in ("name", "description", "timeoutMillis", "parameters") if k in body}

    def name_from_wire(self, body: dict[str, Any]) -> str:
        return str(body["id"])

    def server_fills(self, spec: dict[str, Any]) -> dict[str, Any]:
        if isinstance(spec.get("parameters"), dict):
            spec = {**spec, "parameters": _default_string_lengths(spec["parameters"])}
        return spec


class PromptAdapter(KindAdapter):
    kind = Kind.PROMPT
    collection_path = "/api/v2/ai/llm/prompts"
    read_scope = "ai:llm:manage"
    write_scope = "ai:llm:manage"
    id_strategy: ClassVar[IdStrategy] = "post"
    spec_model = PromptSpec
    server_managed = KindAdapter.server_managed | {"revision"}

    def to_wire(self, name: str, spec: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
        body = {k: v for k, v in spec.items() if k != "contextPolicy"}
        if spec.get("contextPolicy") is not None:
            body["contextPolicyId"] = spec["contextPolicy"]
        return {"name": name, **body, "labels": labels}

    def spec_from_wire(self, body: dict[str, Any]) -> dict[str, Any]:
        fields = (
            "version",
            "modelId",
            "maxTokens",
            "template",
            "variables",
            "contextRules",
            "functions",
            "variants",
        )
        spec = {k: body[k] for k in fields if k in body}
        if body.get("contextPolicyId") is not None:
            spec["contextPolicy"] = body["contextPolicyId"]
        return spec

    def name_from_wire(self, body: dict[str, Any]) -> str:
        return str(body["name"])


class ContextPolicyAdapter(KindAdapter):
    kind = Kind.CONTEXT_POLICY
    collection_path = "/api/v2/ai/llm/context-policies"
    read_scope = "ai:llm:read"
    write_scope = "ai:llm:write"
    id_strategy: ClassVar[IdStrategy] = "put"
    spec_model = ContextPolicySpec

    def server_fills(self, spec: dict[str, Any]) -> dict[str, Any]:
        limits = dict(spec.get("tokenLimits") or {})
        ratio = limits.pop("softLimitRatio", None)
        # The wire has no ratio: the client sends the soft limit it implies, so that is what is stored.
        if ratio is not None and "softLimit" not in limits and "hardLimit" in limits:
            limits["softLimit"] = math.floor(limits["hardLimit"] * ratio)
        return {**spec, "tokenLimits": limits} if "tokenLimits" in spec else spec

    def to_wire(self, name: str, spec: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
        spec = self.with_server_defaults(spec)
        limits = spec.get("tokenLimits", {})
        retention = spec.get("retention", {})
        body: dict[str, Any] = {
            "id": name,
            "model_id": spec.get("modelId"),
            "token_limit_matrix": {
                "hard_limit": limits.get("hardLimit"),
                "soft_limit": limits.get("softLimit"),
            },
            "memory_retention_directives": {
                "persist_system_prompts": retention.get("persistSystemPrompts"),
                "retain_user_pii": retention.get("retainUserPii"),
                "auto_compact_threshold": retention.get("autoCompactThreshold"),
                "eviction_policy": retention.get("evictionPolicy"),
            },
            "pii_masking": spec.get("piiMasking", []),
            "metadata_fields": spec.get("metadataFields", []),
            "attribute_mappings": [
                {"source": m.get("source"), "attribute": m.get("attribute"), "data_type": m.get("dataType")}
                for m in spec.get("attributeMappings", [])
            ],
            "flow_id": spec.get("flowId"),
            "format": spec.get("format"),
            "labels": labels,
        }
        return _drop_none(body)  # type: ignore[no-any-return]

    def spec_from_wire(self, body: dict[str, Any]) -> dict[str, Any]:
        limits = body.get("token_limit_matrix") or {}
        retention = body.get("memory_retention_directives") or {}
        spec: dict[str, Any] = {
            "modelId": body.get("model_id"),
            "tokenLimits": {"hardLimit": limits.get("hard_limit"), "softLimit": limits.get("soft_limit")},
            "retention": {
                "persistSystemPrompts": retention.get("persist_system_prompts"),
                "retainUserPii": retention.get("retain_user_pii"),
                "autoCompactThreshold": retention.get("auto_compact_threshold"),
                "evictionPolicy": retention.get("eviction_policy"),
            },
            "piiMasking": body.get("pii_masking"),
            "metadataFields": body.get("metadata_fields"),
            "attributeMappings": [
                {"source": m.get("source"), "attribute": m.get("attribute"), "dataType": m.get("data_type")}
                for m in body.get("attribute_mappings") or []
            ],
            "flowId": body.get("flow_id"),
            "format": body.get("format"),
        }
        return _drop_none(spec)  # type: ignore[no-any-return]

    def name_from_wire(self, body: dict[str, Any]) -> str:
        return str(body["id"])


ADAPTERS: dict[Kind, KindAdapter] = {
    Kind.FUNCTION_DEFINITION: FunctionDefinitionAdapter(),
    Kind.CONTEXT_POLICY: ContextPolicyAdapter(),
    Kind.PROMPT: PromptAdapter(),
}


def adapter_for(kind: Kind) -> KindAdapter:
    return ADAPTERS[kind]


# --- flows: the inputs a flow declares (a real platform API, read in both its shapes) -------------

# The data types a flow input (and an attribute mapping) can have, in the documents' words.
DATA_TYPES = ("string", "number", "boolean", "date")


# JSON Schema types as the documents' data types. A string is a date when its format says so.
_SCHEMA_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}
_DATE_FORMATS = ("date", "date-time")
# Valid JSON Schema types the documents have no data type for (a collection or JSON input):
# kept under their own names, so a check naming such an input says what it is.
_OTHER_SCHEMA_TYPES = ("array", "object", "null")
# Architect refers to a flow's variables as ``Flow.<name>``; a schema that keeps the prefix
# names the same input (no input name may contain a dot, so stripping it is safe).
_FLOW_PREFIX = "Flow."


def _inputs_from_definitions(definitions: list[Any], where: str) -> dict[str, str]:
    inputs: dict[str, str] = {}
    for index, d in enumerate(definitions):
        if not isinstance(d, Mapping) or not isinstance(d.get("name"), str) or not d["name"]:
            raise RenderError(f"{where}: item {index} needs a name")
        data_type = d.get("dataType", "string")
        if data_type not in DATA_TYPES:
            raise RenderError(
                f"{where}: {d['name']!r} has dataType {data_type!r} (expected one of {', '.join(DATA_TYPES)})"
            )
        inputs[d["name"]] = str(data_type)
    return inputs


def _schema_type(name: str, schema: Any, where: str) -> str:
    """One property's JSON Schema as a data type: integer and number are numbers, a string
    with ``format: date`` or ``date-time`` is a date; ``["string", "null"]`` reads as string."""
    if not isinstance(schema, Mapping):
        raise RenderError(f"{where}: inputSchema property {name!r} must be an object")
    declared = schema.get("type", "string")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), "null")
    if declared == "string" and schema.get("format") in _DATE_FORMATS:
        return "date"
    if isinstance(declared, str) and declared in _SCHEMA_TYPES:
        return _SCHEMA_TYPES[declared]
    if isinstance(declared, str) and declared in _OTHER_SCHEMA_TYPES:
        return declared
    raise RenderError(f"{where}: inputSchema property {name!r} has type {declared!r}, not a JSON Schema type")


def _inputs_from_schema(schema: Mapping[str, Any], where: str) -> dict[str, str]:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        raise RenderError(f"{where}: inputSchema.properties must be an object")
    inputs: dict[str, str] = {}
    for raw_name, property_schema in properties.items():
        name = str(raw_name).removeprefix(_FLOW_PREFIX)
        if not name:
            raise RenderError(f"{where}: inputSchema has a property without a name")
        inputs[name] = _schema_type(name, property_schema, where)
    return inputs


def flow_inputs_from(value: Any, where: str = "flow inputs") -> dict[str, str]:
    """A flow's input names and data types (string, number, boolean, date), from any of:

    - a flow as ``GET /api/v2/flows/{id}`` serves it: the platform's ``inputSchema`` (a JSON
      schema of type object) is read first, the documents' ``inputDefinitions`` second; a flow
      with neither has no inputs;
    - a bare JSON schema of type object (``properties``);
    - the documents' ``[{name, dataType}, ...]`` list.

    The one reader of flow inputs: the live client and the committed samples both use it.
    """
    if isinstance(value, list):
        return _inputs_from_definitions(value, where)
    if isinstance(value, Mapping):
        schema = value.get("inputSchema")
        if isinstance(schema, Mapping) and "properties" in schema:
            return _inputs_from_schema(schema, where)
        if "inputDefinitions" in value:
            definitions = value["inputDefinitions"]
            if not isinstance(definitions, list):
                raise RenderError(f"{where}: inputDefinitions must be a list of {{name, dataType}}")
            return _inputs_from_definitions(definitions, where)
        if "properties" in value:
            return _inputs_from_schema(value, where)
        if "inputSchema" in value or {"id", "name"} <= value.keys():
            return {}  # a flow that declares no inputs
    raise RenderError(
        f"{where}: expected a JSON list of {{name, dataType}}, a flow (inputSchema or "
        "inputDefinitions) or a JSON schema with properties"
    )
