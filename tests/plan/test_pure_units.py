"""Unit tests of the pure pieces on plain data: rollback planning, drift classes, redaction and the
offline rules. (The CLI tests drive the same code end to end; these pin each rule down alone.)"""

from __future__ import annotations

from typing import Any

from reconciler.drift import DriftClass, classify
from reconciler.journal import GENESIS, JournalRecord, RecordType
from reconciler.models import Kind, LiveResource, ResourceKey
from reconciler.plan import Action, PlanOptions, make_plan
from reconciler.redact import Redactor, holds_redaction, sensitive_marker
from reconciler.rollback import rollback_changes
from reconciler.rules import estimate_tokens, unknown_keywords
from tests.plan.cases import parse_manifests

FN = ResourceKey(Kind.FUNCTION_DEFINITION, "func-a")
PROMPT = ResourceKey(Kind.PROMPT, "helper")


def function_doc(description: str, timeout: int = 1000) -> dict[str, Any]:
    spec = {
        "name": "a",
        "description": description,
        "timeoutMillis": timeout,
        "parameters": {"type": "object"},
    }
    return {"spec": spec, "labels": {"reconciler.genesys.cloud/managed-by": "units"}}


def outcome(seq: int, key: ResourceKey, action: str, status: str, before: Any, after: Any) -> JournalRecord:
    data = {
        "change_id": seq,
        "action": action,
        "kind": key.kind.value,
        "name": key.name,
        "status": status,
        "etag_after": f'"etag-{seq}"',
        "live_id": key.name,
        "before": before,
        "after": after,
    }
    return JournalRecord(
        seq, "2026-11-23T00:00:00.000+00:00", "run-1", RecordType.OUTCOME, data, GENESIS, GENESIS
    )


# --- rollback -------------------------------------------------------------------------------


def test_rollback_undoes_each_applied_write_with_its_diff() -> None:
    records = [
        outcome(0, FN, "update", "applied", function_doc("Old."), function_doc("New.", 2000)),
        outcome(
            1,
            ResourceKey(Kind.FUNCTION_DEFINITION, "func-new"),
            "create",
            "applied",
            None,
            function_doc("N."),
        ),
        outcome(
            2,
            ResourceKey(Kind.FUNCTION_DEFINITION, "func-gone"),
            "delete",
            "applied",
            function_doc("G."),
            None,
        ),
        outcome(
            3, ResourceKey(Kind.FUNCTION_DEFINITION, "func-x"), "update", "conflict", function_doc("A."), None
        ),
    ]
    changes, refused = rollback_changes(records)
    by_key = {c.key.name: c for c in changes}
    assert refused == []
    assert {name: c.action for name, c in by_key.items()} == {
        "func-a": Action.ROLLBACK,
        "func-new": Action.DELETE,
        "func-gone": Action.CREATE,
    }  # the conflicted write changed nothing, so nothing is undone
    undo = by_key["func-a"]
    assert undo.after == function_doc("Old.") and undo.etag == '"etag-0"'
    assert undo.diff is not None
    assert {(f.path, f.before, f.after) for f in undo.diff.fields} == {
        ("/spec/description", "New.", "Old."),
        ("/spec/timeoutMillis", 2000, 1000),
    }


def test_rollback_refuses_what_it_cannot_restore_exactly() -> None:
    masked = function_doc(sensitive_marker("secret description"))
    records = [
        outcome(0, FN, "update", "applied", masked, function_doc("New.")),
        outcome(1, PROMPT, "update", "unknown", None, None),
    ]
    changes, refused = rollback_changes(records)
    assert changes == []
    assert len(refused) == 2
    masked_refusal, lost = sorted(refused)
    assert "redacted fields" in masked_refusal and "FunctionDefinition/func-a" in masked_refusal
    assert "outcome of its write was lost" in lost and "Prompt/helper" in lost


def test_rollback_undoes_a_resource_once_from_its_last_write() -> None:
    records = [
        outcome(0, FN, "update", "applied", function_doc("First."), function_doc("Second.")),
        outcome(1, FN, "update", "applied", function_doc("Second."), function_doc("Third.")),
    ]
    changes, _ = rollback_changes(records)
    assert [(c.key, c.after) for c in changes] == [(FN, function_doc("Second."))]


# --- drift ----------------------------------------------------------------------------------

MANIFESTS = """\
apiVersion: reconciler.genesys.cloud/v1
kind: FunctionDefinition
metadata: {name: func-a}
spec: {name: a, description: In git., timeoutMillis: 1000, parameters: {type: object, properties: {}}}
---
apiVersion: reconciler.genesys.cloud/v1
kind: FunctionDefinition
metadata: {name: func-missing}
spec: {name: m, description: Only in git., timeoutMillis: 1000, parameters: {type: object, properties: {}}}
"""


def live(name: str, description: str, labels: dict[str, str], who: str | None = None) -> LiveResource:
    spec = {
        "name": name,
        "description": description,
        "timeoutMillis": 1000,
        "parameters": {"type": "object", "properties": {}},
    }
    return LiveResource(
        ResourceKey(Kind.FUNCTION_DEFINITION, name), name, '"e"', spec, labels, who, "2026-11-22"
    )


def test_drift_classes_with_who_changed_it() -> None:
    ours = {"reconciler.genesys.cloud/managed-by": "units"}
    org = [
        live("func-a", "Edited in the UI.", ours, who="alice"),
        live("func-extra", "Ours, gone from git.", ours),
        live("func-theirs", "Another team's.", {}),
    ]
    plan = make_plan(parse_manifests(MANIFESTS), org, PlanOptions(project="units", prune=True), "")
    report = classify(plan, org)
    found = {d.key.name: d for d in report.items}
    assert {name: d.drift for name, d in found.items()} == {
        "func-a": DriftClass.CHANGED,
        "func-missing": DriftClass.MISSING,
        "func-extra": DriftClass.EXTRA,
    }  # another team's resource is never drift of ours
    assert "/spec/description" in found["func-a"].fields and found["func-a"].modified_by == "alice"


# --- redaction --------------------------------------------------------------------------------


def test_redaction_masks_secrets_everywhere_and_sensitive_pointers_with_a_hash() -> None:
    redactor = Redactor(("s3cret-value",), {Kind.CONTEXT_POLICY: ("/piiMasking/*/pattern",)})
    assert redactor.text("token=s3cret-value;") == "token=***;"
    spec = {
        "piiMasking": [{"name": "a", "pattern": "x+"}, {"name": "b", "pattern": "y+"}],
        "note": "s3cret-value",
    }
    shown = redactor.resource(Kind.CONTEXT_POLICY, spec)
    assert shown["piiMasking"][0]["pattern"] == sensitive_marker("x+") != sensitive_marker("y+")
    assert shown["piiMasking"][1]["name"] == "b" and shown["note"] == "***"
    assert spec["piiMasking"][0]["pattern"] == "x+"  # the input is not modified
    assert holds_redaction(shown) and not holds_redaction(spec)
    assert redactor.resource(Kind.PROMPT, {"template": "x+"}) == {"template": "x+"}


# --- offline rules ----------------------------------------------------------------------------


def test_token_estimate_is_characters_over_four_rounded_up() -> None:
    assert [estimate_tokens("x" * n) for n in (0, 1, 4, 5, 400)] == [0, 1, 1, 2, 100]


def test_unknown_schema_keywords_are_found_in_every_subschema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "q": {"type": "string", "maxLenght": 3},
            "tags": {"type": "array", "items": {"type": "string", "e.g. x": None}},
        },
        "anyOf": [{"required": ["q"], "minimum": None}],
    }
    found = dict(unknown_keywords(schema, "spec.parameters"))
    assert set(found) == {
        "spec.parameters.properties.q.maxLenght",
        "spec.parameters.properties.tags.items.e.g. x",
        "spec.parameters.anyOf[0].minimum",
    }
    assert "did you mean 'maxLength'" in found["spec.parameters.properties.q.maxLenght"]
    assert "a comma inside" in found["spec.parameters.properties.tags.items.e.g. x"]
    assert "null" in found["spec.parameters.anyOf[0].minimum"]


def test_redaction_shortcut_gives_what_the_walk_gives() -> None:
    # value() skips the walk when the JSON encoding holds no secret; the answer must be the same
    # as walking, including secrets JSON escapes, secrets in keys, and data JSON cannot encode.
    import json
    import random

    secrets = ('quo"te\\slash', "tab\there", "ünï\u2028code", "plain-canary-4711")
    redactor = Redactor(tuple(sorted(secrets, key=len, reverse=True)))
    rng = random.Random(15)

    def text() -> str:
        pieces = ["a", "b c", "\n", '"', "\\", "é", *secrets, "plain-canary", "tab\t"]
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))

    def document(depth: int) -> object:
        roll = rng.random()
        if depth > 3 or roll < 0.3:
            return rng.choice([text(), rng.randint(-5, 5), 2**70, None, True, 1.5])
        if roll < 0.65:
            return {text(): document(depth + 1) for _ in range(rng.randint(0, 4))}
        return [document(depth + 1) for _ in range(rng.randint(0, 4))]

    for _ in range(2000):
        doc = {"spec": document(0)}
        walked = redactor._walk(doc)
        assert json.dumps(redactor.value(doc), sort_keys=True) == json.dumps(walked, sort_keys=True)
        assert not any(s in json.dumps(redactor.value(doc), ensure_ascii=False) for s in secrets)
    # Not JSON data (a non-string key, a lone surrogate): walked as before.
    assert redactor.value({1: "plain-canary-4711"}) == {1: "***"}
    assert redactor.value(["\ud800plain-canary-4711"]) == ["\ud800***"]
    assert Redactor(("\udcff-secret",)).value({"k": "x\udcff-secret"}) == {"k": "x***"}
