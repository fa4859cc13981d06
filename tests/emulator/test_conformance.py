"""The emulator and `reconciler validate` state the service's rules identically.

They share no code (ARCHITECTURE.md), so this one table keeps them from drifting: each row is a
bad resource in manifest form; its wire form (through the client's own adapter) is sent to the
emulator over a loopback socket, which must answer 400 with the Genesys error body naming the
field, and the manifest form must be refused client side (`validate`, or the live checks `plan`
runs for rules that need the org, such as an unknown flow). A control row (no change) proves both
sides accept the base resources, so a refusal is about the row's one change.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.emulator.config import DEFAULT_FIXTURES, EmulatorConfig
from reconciler.emulator.server import running_emulator
from reconciler.kinds import adapter_for
from reconciler.loader import collect_manifests
from reconciler.models import Kind
from reconciler.rules import check_live
from tests.conftest import Org

FUNCTION = {
    "apiVersion": "reconciler.genesys.cloud/v1",
    "kind": "FunctionDefinition",
    "metadata": {"name": "func-a"},
    "spec": {
        "name": "lookup",
        "description": "Looks things up.",
        "timeoutMillis": 1000,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}
POLICY = {
    "apiVersion": "reconciler.genesys.cloud/v1",
    "kind": "ContextPolicy",
    "metadata": {"name": "policy-a"},
    "spec": {
        "modelId": "genesys-llm-v4",
        "tokenLimits": {"hardLimit": 8000, "softLimit": 4000},
        "retention": {"autoCompactThreshold": 0.5, "evictionPolicy": "lru"},
        "piiMasking": [{"name": "email", "pattern": "[a-z]+@[a-z]+", "replacement": "[EMAIL]"}],
        "attributeMappings": [{"source": "crm.tier", "attribute": "customerTier", "dataType": "string"}],
        "flowId": "flow-billing-intake",
    },
}
PROMPT = {
    "apiVersion": "reconciler.genesys.cloud/v1",
    "kind": "Prompt",
    "metadata": {"name": "helper"},
    "spec": {
        "version": "1.0.0",
        "modelId": "genesys-llm-v4",
        "maxTokens": 500,
        "template": "Hello {{ name }}{% for m in messages %} {{ m.text }}{% endfor %}",
        "variables": [{"name": "name", "required": True}, {"name": "messages", "type": "array"}],
        "contextRules": [{"source": "conversation_history", "maxTokens": 100}],
        "functions": ["func-a"],
        "contextPolicy": "policy-a",
    },
}
BASE = {Kind.FUNCTION_DEFINITION: FUNCTION, Kind.CONTEXT_POLICY: POLICY, Kind.PROMPT: PROMPT}
FN, PROMPTS, POLICIES = (
    "/api/v2/ai/llm/function-definitions",
    "/api/v2/ai/llm/prompts",
    "/api/v2/ai/llm/context-policies",
)

Patch = Callable[[dict[str, Any]], None]


def settings(*changes: tuple[str, Any]) -> Patch:
    """Several ``setting``s at once."""

    def patch(spec: dict[str, Any]) -> None:
        for path, value in changes:
            setting(path, value)(spec)

    return patch


def setting(path: str, value: Any) -> Patch:
    """Set spec.<path> (dots and [i]) to value."""

    def patch(spec: dict[str, Any]) -> None:
        parts = path.replace("[", ".").replace("]", "").split(".")
        target: Any = spec
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        last = parts[-1]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return patch


# (id, kind, change to the spec, fieldName the service names)
CASES: list[tuple[str, Kind, Patch, str]] = [
    ("top-level enum", Kind.FUNCTION_DEFINITION, setting("parameters.enum", [{"q": "a"}]), "parameters.enum"),
    (
        "required names an undeclared property",
        Kind.FUNCTION_DEFINITION,
        setting("parameters.required", ["q", "z"]),
        "parameters.required[1]",
    ),
    (
        "unknown JSON Schema keyword",
        Kind.FUNCTION_DEFINITION,
        setting("parameters.properties.q.frobnicate", 3),
        "parameters.properties.q.frobnicate",
    ),
    (
        "not a valid JSON Schema (Draft 7's metaschema)",
        Kind.FUNCTION_DEFINITION,
        setting("parameters.properties.q.minLength", "five"),
        "parameters.properties.q.minLength",
    ),
    ("timeout of true", Kind.FUNCTION_DEFINITION, setting("timeoutMillis", True), "timeoutMillis"),
    ("timeout as a string", Kind.FUNCTION_DEFINITION, setting("timeoutMillis", "1000"), "timeoutMillis"),
    ("timeout out of range", Kind.FUNCTION_DEFINITION, setting("timeoutMillis", 60001), "timeoutMillis"),
    (
        "property type null",
        Kind.FUNCTION_DEFINITION,
        setting("parameters.properties.q.type", "null"),
        "parameters.properties.q.type",
    ),
    ("variable of type object", Kind.PROMPT, setting("variables[1].type", "object"), "variables[1].type"),
    (
        "context rule source bogus",
        Kind.PROMPT,
        setting("contextRules[0].source", "bogus"),
        "contextRules[0].source",
    ),
    (
        "injection point nowhere",
        Kind.PROMPT,
        setting("contextRules[0].injectionPoint", "nowhere"),
        "contextRules[0].injectionPoint",
    ),
    (
        "negative context rule maxTokens",
        Kind.PROMPT,
        setting("contextRules[0].maxTokens", -5),
        "contextRules[0].maxTokens",
    ),
    ("negative maxTokens", Kind.PROMPT, setting("maxTokens", -1), "maxTokens"),
    ("maxTokens of true", Kind.PROMPT, setting("maxTokens", True), "maxTokens"),
    ("version banana", Kind.PROMPT, setting("version", "banana"), "version"),
    (
        "variant weights -50 and 150",
        Kind.PROMPT,
        setting(
            "variants",
            [
                {"name": "a", "template": "Hi {{ name }}", "weight": -50},
                {"name": "b", "template": "Yo {{ name }}", "weight": 150},
            ],
        ),
        "variants[0].weight",
    ),
    (
        "non-numeric variant weight",
        Kind.PROMPT,
        setting("variants", [{"name": "a", "template": "Hi {{ name }}", "weight": "all"}]),
        "variants[0].weight",
    ),
    (
        "variant weights not summing to 100",
        Kind.PROMPT,
        setting(
            "variants",
            [
                {"name": "a", "template": "Hi {{ name }}", "weight": 60},
                {"name": "b", "template": "Yo {{ name }}", "weight": 30},
            ],
        ),
        "variants",
    ),
    ("Jinja syntax error", Kind.PROMPT, setting("template", "Hello {{ name }}{% if %}"), "template"),
    (
        "undeclared variable only in an if",
        Kind.PROMPT,
        setting("template", "Hello {{ name }}{% if vip %}!{% endif %}"),
        "template",
    ),
    ("undeclared variable", Kind.PROMPT, setting("template", "Hello {{ nom }}"), "template"),
    ("required variable unused", Kind.PROMPT, setting("template", "Hello"), "variables[0]"),
    ("token budget", Kind.PROMPT, setting("maxTokens", 110), "template"),
    (
        "function that does not exist",
        Kind.PROMPT,
        setting("functions", ["func-a", "func-zz"]),
        "functions[1]",
    ),
    ("policy that does not exist", Kind.PROMPT, setting("contextPolicy", "policy-zz"), "contextPolicyId"),
    ("unknown model", Kind.PROMPT, setting("modelId", "gpt-0"), "modelId"),
    (
        "attribute data type object",
        Kind.CONTEXT_POLICY,
        setting("attributeMappings[0].dataType", "object"),
        "attribute_mappings[0].data_type",
    ),
    (
        "attribute data type unlike the flow's",
        Kind.CONTEXT_POLICY,
        setting("attributeMappings[0].dataType", "number"),
        "attribute_mappings[0].data_type",
    ),
    ("unknown flow", Kind.CONTEXT_POLICY, setting("flowId", "flow-nowhere"), "flow_id"),
    (
        "catastrophic PII pattern",
        Kind.CONTEXT_POLICY,
        setting("piiMasking[0].pattern", "(a+)+@"),
        "pii_masking[0].pattern",
    ),
    (
        "backtracking alternation",
        Kind.CONTEXT_POLICY,
        setting("piiMasking[0].pattern", "(a|a)*$"),
        "pii_masking[0].pattern",
    ),
    (
        "stacked unbounded classes",
        Kind.CONTEXT_POLICY,
        setting("piiMasking[0].pattern", r"\w*\w*\w*\w*\w*@"),
        "pii_masking[0].pattern",
    ),
    (
        "counted repeat of .*",
        Kind.CONTEXT_POLICY,
        setting("piiMasking[0].pattern", "(.*a){12}$"),
        "pii_masking[0].pattern",
    ),
    (
        "compaction on a model without it",
        Kind.CONTEXT_POLICY,
        settings(("modelId", "genesys-llm-lite"), ("format", "text")),
        "memory_retention_directives.auto_compact_threshold",
    ),
    (
        "a format the model does not support",
        Kind.CONTEXT_POLICY,
        settings(("modelId", "genesys-llm-lite"), ("retention", {"evictionPolicy": "lru"})),
        "format",
    ),
    (
        "more context rules than the model's windows",
        Kind.PROMPT,
        settings(
            ("modelId", "genesys-llm-lite"),
            (
                "contextRules",
                [
                    {"source": "conversation_history", "maxTokens": 50},
                    {"source": "knowledge_base", "maxTokens": 50},
                ],
            ),
        ),
        "contextRules",
    ),
    (
        "PII pattern that does not compile",
        Kind.CONTEXT_POLICY,
        setting("piiMasking[0].pattern", "[a-z+@"),
        "pii_masking[0].pattern",
    ),
    (
        "hard_limit of true",
        Kind.CONTEXT_POLICY,
        setting("tokenLimits", {"hardLimit": True}),
        "token_limit_matrix.hard_limit",
    ),
    (
        "hard limit above the model's",
        Kind.CONTEXT_POLICY,
        setting("tokenLimits.hardLimit", 40000),
        "token_limit_matrix.hard_limit",
    ),
    (
        "soft limit above hard",
        Kind.CONTEXT_POLICY,
        setting("tokenLimits.softLimit", 9000),
        "token_limit_matrix.soft_limit",
    ),
    (
        "compact threshold as a string",
        Kind.CONTEXT_POLICY,
        setting("retention.autoCompactThreshold", "0.5"),
        "memory_retention_directives.auto_compact_threshold",
    ),
    (
        "eviction policy random",
        Kind.CONTEXT_POLICY,
        setting("retention.evictionPolicy", "random"),
        "memory_retention_directives.eviction_policy",
    ),
]
# Rows the client accepts today (pydantic's lax mode turns true into 1 and "1000" into 1000).
# Strict: the day the client refuses them, this fails and the mark must go.


# The policy adapter sends what the model parses (true -> 1, "0.5" -> 0.5), so these rows put
# the raw value on the wire themselves: the service must still refuse it.
WIRE_PATCHES: dict[str, tuple[str, Any]] = {
    "hard_limit of true": ("token_limit_matrix.hard_limit", True),
    "compact threshold as a string": ("memory_retention_directives.auto_compact_threshold", "0.5"),
}


def documents(kind: Kind | None, patch: Patch | None) -> dict[Kind, dict[str, Any]]:
    docs = {k: copy.deepcopy(v) for k, v in BASE.items()}
    if kind is not None and patch is not None:
        patch(docs[kind]["spec"])
    return docs


def wire(doc: dict[str, Any]) -> dict[str, Any]:
    kind = Kind(doc["kind"])
    return adapter_for(kind).to_wire(doc["metadata"]["name"], doc["spec"], {})


@pytest.fixture(scope="module")
def service() -> Iterator[Org]:
    with running_emulator(EmulatorConfig(rate_limit_per_minute=1_000_000, seed=3)) as url:
        yield Org(url)


def send(
    org: Org, docs: dict[Kind, dict[str, Any]], kind: Kind | None, raw: tuple[str, Any] | None = None
) -> httpx.Response:
    """Reset the org, store the resources the case does not change, then send the case's one."""
    org.admin("POST", "reset")
    subject = kind or Kind.PROMPT
    for other in (Kind.FUNCTION_DEFINITION, Kind.CONTEXT_POLICY):
        if other is not subject:
            body = wire(docs[other])
            path = FN if other is Kind.FUNCTION_DEFINITION else POLICIES
            assert org.api("PUT", f"{path}/{body['id']}", body).status_code == 201
    body = wire(docs[subject])
    if raw is not None:
        setting(*raw)(body)
    if subject is Kind.PROMPT:
        return org.api("POST", PROMPTS, body)
    path = FN if subject is Kind.FUNCTION_DEFINITION else POLICIES
    return org.api("PUT", f"{path}/{body['id']}", body)


def client_problems(tmp_path: Path, docs: dict[Kind, dict[str, Any]]) -> str:
    """What the client says about the manifests: validate's output, then the live checks."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    for kind, doc in docs.items():
        (folder / f"{kind.value}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    result = CliRunner().invoke(main, ["validate", str(folder)], catch_exceptions=False)
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        return result.output
    capacities = {m["model_id"]: m for m in json.loads((DEFAULT_FIXTURES / "models.json").read_text())}
    models = {model: int(c["max_tokens"]) for model, c in capacities.items()}
    flows = {
        f["id"]: {d["name"]: d["dataType"] for d in f["inputDefinitions"]}
        for f in json.loads((DEFAULT_FIXTURES / "flows.json").read_text())
    }
    loaded, problems = collect_manifests([folder])
    assert problems == [], problems
    return "\n".join(check_live([m.manifest for m in loaded.manifests], models, flows, capacities))


def test_the_base_resources_are_valid_on_both_sides(service: Org, tmp_path: Path) -> None:
    docs = documents(None, None)
    assert client_problems(tmp_path, docs) == ""
    response = send(service, docs, None)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("kind", "patch", "field", "raw"),
    [(*c[1:], WIRE_PATCHES.get(c[0])) for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_the_emulator_refuses_it(
    service: Org, kind: Kind, patch: Patch, field: str, raw: tuple[str, Any] | None
) -> None:
    response = send(service, documents(kind, patch), kind, raw)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid.value" and body["status"] == 400
    assert response.headers["ININ-Correlation-Id"] == body["contextId"]
    assert [d["fieldName"] for d in body["details"]] == [field], body


@pytest.mark.parametrize(
    ("kind", "patch"),
    [
        pytest.param(
            *c[1:3],
            id=c[0],
        )
        for c in CASES
    ],
)
def test_the_client_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: Kind, patch: Patch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert client_problems(tmp_path, documents(kind, patch)) != ""
