"""The planner's shortcut for resources in sync: a live body that is exactly git's document is
never put through its kind's model (``diff.live_matches``, ``LiveResource``'s lazy ``spec``).

The shortcut is sound only because a desired document is a fixed point of the live side's
canonical form; the first test holds that for every manifest the repository and the golden
cases have, so a model change that breaks it fails here rather than hiding a difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.diff import desired_document, live_document, live_matches
from reconciler.kinds import adapter_for
from reconciler.models import MANAGED_BY_LABEL, Kind, LiveResource, ResourceKey, key_of, spec_dict
from reconciler.plan import Action, PlanOptions, make_plan
from tests.plan.cases import GOLDEN, parse_manifests

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_FILES = sorted([*(ROOT / "manifests").rglob("*.yaml"), *GOLDEN.glob("*/desired.yaml")])


def every_manifest() -> list[Any]:
    found = []
    for path in MANIFEST_FILES:
        found.extend(parse_manifests(path.read_text()))
    return found


def test_the_corpus_has_every_kind() -> None:
    assert {Kind(m.kind) for m in every_manifest()} == set(Kind)


def test_a_desired_spec_goes_through_its_model_unchanged() -> None:
    for manifest in every_manifest():
        adapter = adapter_for(Kind(manifest.kind))
        spec = desired_document(manifest, "p")["spec"]
        assert adapter.canonical_spec(spec) == spec, key_of(manifest)
        # ... and is what the longer way (through the model twice) makes.
        assert spec == adapter.with_server_defaults(spec_dict(manifest)), key_of(manifest)


class Counting:
    """A canonical form that counts how often it is made."""

    def __init__(self, kind: Kind) -> None:
        self.adapter = adapter_for(kind)
        self.calls = 0

    def __call__(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return self.adapter.canonical_spec(spec)


PROMPT = """
apiVersion: reconciler.genesys.cloud/v1
kind: Prompt
metadata: {name: helper}
spec: {version: 1.0.0, modelId: gpt-x, maxTokens: 100, template: "Hello"}
"""
KEY = ResourceKey(Kind.PROMPT, "helper")
LABELS = {MANAGED_BY_LABEL: "p"}


def live_prompt(wire_spec: dict[str, Any], canonical: Counting) -> LiveResource:
    return LiveResource(KEY, "id-1", '"e1"', wire_spec, dict(LABELS), canonical=canonical)


def plan_of(live: LiveResource) -> Any:
    return make_plan(parse_manifests(PROMPT), [live], PlanOptions(project="p"), "").changes[0]


def test_an_exact_live_copy_is_in_sync_without_its_canonical_form() -> None:
    desired = desired_document(parse_manifests(PROMPT)[0], "p")
    canonical = Counting(Kind.PROMPT)
    live = live_prompt(dict(desired["spec"]), canonical)
    assert live_matches(desired, live)
    change = plan_of(live)
    assert change.action is Action.NO_OP and change.before == change.after == desired
    assert change.before["spec"] is live.wire_spec  # the live data is kept, not a second copy
    assert (change.etag, change.live_id) == ('"e1"', "id-1")
    assert canonical.calls == 0


def test_a_live_body_without_the_models_defaults_still_matches_through_the_model() -> None:
    # The service leaves out empty lists; the model's dump has them. Not exact, but the same.
    wire = {"version": "1.0.0", "modelId": "gpt-x", "maxTokens": 100, "template": "Hello"}
    canonical = Counting(Kind.PROMPT)
    live = live_prompt(wire, canonical)
    desired = desired_document(parse_manifests(PROMPT)[0], "p")
    assert not live_matches(desired, live)
    change = plan_of(live)
    assert change.action is Action.NO_OP
    assert change.before == live_document(live) == desired
    assert canonical.calls == 1  # made once, then kept


def test_a_live_difference_is_shown_from_the_canonical_form() -> None:
    wire = {"version": "1.0.0", "modelId": "gpt-x", "maxTokens": 90, "template": "Hello"}
    canonical = Counting(Kind.PROMPT)
    change = plan_of(live_prompt(wire, canonical))
    assert change.action is Action.UPDATE
    assert change.before["spec"] == {
        **wire,
        "variables": [],
        "contextRules": [],
        "functions": [],
        "variants": [],
    }
    assert [f.path for f in change.diff.fields] == ["/spec/maxTokens"]


def test_a_live_resource_from_the_wire_equals_one_made_canonical() -> None:
    wire = {"version": "1.0.0", "modelId": "gpt-x", "maxTokens": 100, "template": "Hello"}
    lazy = live_prompt(wire, Counting(Kind.PROMPT))
    eager = LiveResource(KEY, "id-1", '"e1"', adapter_for(Kind.PROMPT).canonical_spec(wire), dict(LABELS))
    assert lazy == eager and "variables" in repr(lazy)
    assert lazy != LiveResource(KEY, "id-1", '"e2"', eager.spec, dict(LABELS))
    with pytest.raises(TypeError):
        hash(lazy)
