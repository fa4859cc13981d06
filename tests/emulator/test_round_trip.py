"""Round trip as a property: whatever the emulator accepts, `reconciler export` writes manifests
that `reconciler validate` accepts and that `reconciler plan` shows as no change.

Hypothesis generates wire bodies (mostly valid, with the odd corner: optional fields left out,
server defaults relied on, unicode text, nested schemas, variants); bodies the emulator refuses
are simply not part of the property. Each example runs the real CLI against a real emulator on
a loopback socket.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reconciler.cli import main
from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.server import running_emulator
from tests.conftest import Org

FN, PROMPTS, POLICIES = (
    "/api/v2/ai/llm/function-definitions",
    "/api/v2/ai/llm/prompts",
    "/api/v2/ai/llm/context-policies",
)
MODELS = {"genesys-llm-v4": 32768, "openai-gpt-4o-mini": 16384}
FLOWS = {"flow-billing-intake": {"customerTier": "string", "accountBalance": "number", "isVip": "boolean"}}
SAFE_PATTERNS = [r"[a-z]+@[a-z]+\.com", r"\b\d{4}[ -]?\d{4}\b", r"(?i)secret-\w{4,8}", r"[A-Z]{2}\d{6}"]

# Free text: letters of several scripts, digits, punctuation, spaces. `$` is left out: a `${x}`
# in live text is exported as it is and then read by the loader as a variable reference (an
# export bug outside the emulator, reported separately).
text = st.text(
    alphabet=st.characters(
        codec="utf-8",
        categories=("L", "N", "P", "Zs"),
        exclude_characters="$\u2028\u2029\x85",
    ),
    min_size=1,
    max_size=30,
)
ident = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,20}\Z")
labels = st.dictionaries(st.from_regex(r"\A[a-z][a-z0-9./-]{0,15}\Z"), text, max_size=2)
leaf = st.sampled_from(["string", "number", "integer", "boolean"]).flatmap(
    lambda t: st.fixed_dictionaries(
        {"type": st.just(t)},
        optional={"description": text}
        | (
            {"maxLength": st.integers(1, 500), "enum": st.lists(text, min_size=1, max_size=3, unique=True)}
            if t == "string"
            else {}
        )
        | ({"minimum": st.integers(-5, 5)} if t in ("number", "integer") else {}),
    )
)
prop = st.one_of(
    leaf,
    st.builds(lambda items: {"type": "array", "items": items}, leaf),
    st.dictionaries(st.from_regex(r"\A[a-z][a-z_]{0,8}\Z"), leaf, max_size=3).map(
        lambda props: {"type": "object", "properties": props}
    ),
)


@st.composite
def functions(draw: st.DrawFn) -> dict[str, Any]:
    props = draw(st.dictionaries(st.from_regex(r"\A[a-z][a-zA-Z0-9_]{0,10}\Z"), prop, max_size=5))
    parameters: dict[str, Any] = {"type": "object", "properties": props}
    if props and draw(st.booleans()):
        parameters["required"] = draw(st.lists(st.sampled_from(sorted(props)), min_size=1, unique=True))
    if draw(st.booleans()):
        parameters["additionalProperties"] = draw(st.booleans())
    body = {
        "id": draw(ident),
        "name": draw(text),
        "description": draw(text),
        "timeoutMillis": draw(st.integers(1, 60000)),
        "parameters": parameters,
    }
    if draw(st.booleans()):
        body["labels"] = draw(labels)
    return body


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    model = draw(st.sampled_from(sorted(MODELS)))
    hard = draw(st.integers(2, MODELS[model]))
    body: dict[str, Any] = {"id": draw(ident), "model_id": model, "token_limit_matrix": {"hard_limit": hard}}
    if draw(st.booleans()):
        body["token_limit_matrix"]["soft_limit"] = draw(st.integers(1, hard - 1))
    if draw(st.booleans()):
        body["memory_retention_directives"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "persist_system_prompts": st.booleans(),
                    "retain_user_pii": st.booleans(),
                    "auto_compact_threshold": st.floats(0.01, 1.0).map(lambda f: round(f, 2)),
                    "eviction_policy": st.sampled_from(["lru", "fifo", "summarize"]),
                },
            )
        )
    if draw(st.booleans()):
        body["pii_masking"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"name": text, "pattern": st.sampled_from(SAFE_PATTERNS)}, optional={"replacement": text}
                ),
                max_size=2,
            )
        )
    if draw(st.booleans()):
        body["metadata_fields"] = draw(st.lists(text, max_size=3))
    if draw(st.booleans()):
        flow = draw(st.sampled_from(sorted(FLOWS)))
        body["flow_id"] = flow
        inputs = draw(st.lists(st.sampled_from(sorted(FLOWS[flow])), max_size=2, unique=True))
        body["attribute_mappings"] = [
            {"source": draw(text), "attribute": name, "data_type": FLOWS[flow][name]} for name in inputs
        ]
    if draw(st.booleans()):
        body["format"] = draw(st.sampled_from(["json", "text"]))
    if draw(st.booleans()):
        body["labels"] = draw(labels)
    return body


@st.composite
def prompts(draw: st.DrawFn, function_ids: list[str], policy_ids: list[str]) -> dict[str, Any]:
    names = draw(st.lists(st.from_regex(r"\A[a-z][a-z_]{0,8}\Z"), max_size=3, unique=True))
    used = draw(st.lists(st.sampled_from(names), unique=True)) if names else []

    def template() -> str:
        pieces = [draw(text)] + [f"{{{{ {n} }}}}" for n in used]
        if names and draw(st.booleans()):
            pieces.append(f"{{% if {names[0]} %}}{draw(text)}{{% endif %}}")
        if draw(st.booleans()):
            pieces.append("{% for m in [1, 2] %}{{ m }}{% endfor %}")
        return " ".join(pieces)

    main_template = template()
    if names and names[0] not in used and "{% if" in main_template:
        used = [*used, names[0]]
    variables = []
    for n in names:
        variable: dict[str, Any] = {"name": n}
        if draw(st.booleans()):
            variable["type"] = draw(st.sampled_from(["string", "number", "boolean", "array"]))
        if n in used and draw(st.booleans()):
            variable["required"] = True
        if draw(st.booleans()):
            variable["defaultValue"] = draw(st.one_of(text, st.integers(-9, 9), st.booleans()))
        variables.append(variable)
    body: dict[str, Any] = {
        "name": draw(text),
        "version": draw(st.from_regex(r"\A(0|[1-9][0-9]?)\.(0|[1-9])\.(0|[1-9])(-rc\.[1-9])?\Z")),
        "template": main_template,
        "modelId": draw(st.sampled_from(sorted(MODELS))),
        "maxTokens": draw(st.integers(2000, 8000)),
        "variables": variables,
    }
    if draw(st.booleans()):
        body["contextRules"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "source": st.sampled_from(["conversation_history", "external_api", "knowledge_base"]),
                        "maxTokens": st.integers(0, 500),
                    },
                    optional={"injectionPoint": st.sampled_from(["system", "user", "assistant"])},
                ),
                max_size=2,
            )
        )
    if function_ids and draw(st.booleans()):
        body["functions"] = draw(st.lists(st.sampled_from(function_ids), unique=True))
    if policy_ids and draw(st.booleans()):
        body["contextPolicyId"] = draw(st.sampled_from(policy_ids))
    if draw(st.booleans()):
        first = draw(st.integers(0, 100))
        body["variants"] = [
            {"name": "a", "template": template(), "weight": first},
            {"name": "b", "template": template(), "weight": 100 - first},
        ]
    if draw(st.booleans()):
        body["labels"] = draw(labels)
    return body


@pytest.fixture(scope="module")
def service() -> Iterator[Org]:
    with running_emulator(EmulatorConfig(rate_limit_per_minute=1_000_000, seed=5)) as url:
        yield Org(url)


def cli(org: Org, root: Path, *args: str) -> tuple[int, str]:
    env = {**org.environ(), "RECONCILER_ENV": "test"}
    previous = Path.cwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        os.chdir(previous)
    return result.exit_code, result.output


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_what_the_emulator_accepts_exports_validates_and_plans_clean(
    service: Org, data: st.DataObject
) -> None:
    service.admin("POST", "reset")
    stored: dict[str, list[str]] = {"functions": [], "policies": []}
    for body in data.draw(
        st.lists(functions(), min_size=1, max_size=2, unique_by=lambda b: b["id"]), label="functions"
    ):
        response = service.api("PUT", f"{FN}/{body['id']}", body)
        event(f"function {response.status_code} {response.json().get('details')}")
        if response.status_code == 201:
            stored["functions"].append(body["id"])
    for body in data.draw(st.lists(policies(), max_size=1), label="policies"):
        response = service.api("PUT", f"{POLICIES}/{body['id']}", body)
        event(f"policy {response.status_code} {response.json().get('details')}")
        if response.status_code == 201:
            stored["policies"].append(body["id"])
    accepted = 0
    for body in data.draw(
        st.lists(prompts(stored["functions"], stored["policies"]), max_size=1), label="prompts"
    ):
        response = service.api("POST", PROMPTS, body)
        event(f"prompt {response.status_code} {response.json().get('details')}")
        accepted += response.status_code == 201
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        environment = f"environments:\n  test:\n    baseUrl: {service.base_url}\n"
        (root / "reconciler.yaml").write_text(f"project: roundtrip\nmanifests: [exported]\n{environment}")
        code, out = cli(service, root, "export", "--out", "exported")
        assert code == 0, out
        exported = sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*.yaml") if p.name != "reconciler.yaml"
        )
        assert len(exported) == len(stored["functions"]) + len(stored["policies"]) + accepted
        code, out = cli(service, root, "validate", "exported")
        assert code == 0, out
        code, out = cli(service, root, "plan", "exported", "--detailed-exitcode")
        assert code == 0, out
