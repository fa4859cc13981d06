"""The planner's rules, checked on the golden cases' inputs (the goldens pin the exact output;
these say which properties matter, so a blind UPDATE_GOLDEN=1 cannot hide a broken rule)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler import diff as diff_module
from reconciler.diff import IgnoreRules
from reconciler.errors import PlanFileError
from reconciler.models import MANAGED_BY_LABEL, IgnoreDifferences, Kind, ResourceKey
from reconciler.plan import Action, Change, Plan, make_plan, order_changes
from reconciler.plan_json import plan_from_json, plan_to_json
from tests.plan.cases import GOLDEN, load_case, parse_manifests, plan_case


def keys(plan: Plan, action: Action | None = None) -> list[str]:
    return [str(c.key) for c in plan.changes if action is None or c.action is action]


def by_key(plan: Plan) -> dict[str, Change]:
    return {str(c.key): c for c in plan.changes}


def test_unchanged_resources_are_no_ops_despite_server_defaults_and_ordering() -> None:
    plan = plan_case(GOLDEN / "unchanged")
    assert not plan.has_changes
    assert {c.action for c in plan.changes} == {Action.NO_OP}
    # The live-only, unlabelled function the prompt references is neither planned nor a problem.
    assert sorted(keys(plan)) == [
        "ContextPolicy/support-policy",
        "FunctionDefinition/get-weather",
        "Prompt/support-triage",
    ]
    weather = by_key(plan)["FunctionDefinition/get-weather"]
    assert weather.etag == "fd-1" and weather.live_id == "get-weather"
    assert weather.before == weather.after and weather.diff is None


def test_create_has_no_before_no_etag_and_waits_for_its_references() -> None:
    plan = plan_case(GOLDEN / "create")
    assert plan.creates == 3 and plan.updates == 0 and plan.deletes == 0
    prompt = by_key(plan)["Prompt/order-status"]
    assert prompt.before is None and prompt.etag is None and prompt.live_id is None
    assert prompt.after is not None and prompt.after["labels"][MANAGED_BY_LABEL] == "demo"
    assert set(prompt.depends_on) == {
        ResourceKey(Kind.FUNCTION_DEFINITION, "lookup-order"),
        ResourceKey(Kind.CONTEXT_POLICY, "orders-policy"),
    }
    assert keys(plan)[-1] == "Prompt/order-status"


def test_update_reports_fields_and_line_diffs_of_templates() -> None:
    plan = plan_case(GOLDEN / "update")
    prompt = by_key(plan)["Prompt/support-triage"]
    assert prompt.action is Action.UPDATE and prompt.etag == "pr-7"
    assert prompt.live_id == "7d3f0c1e-0000-4000-8000-000000000001"
    assert prompt.diff is not None
    assert set(prompt.diff.template_diffs) == {"template", "variants/B/template"}
    assert "+Greet {{customer}} warmly." in prompt.diff.template_diffs["template"]
    assert "-Greet {{customer}}." in prompt.diff.template_diffs["template"]
    weather = by_key(plan)["FunctionDefinition/get-weather"]
    assert weather.diff is not None
    assert {f.path: f.kind for f in weather.diff.fields} == {
        "/labels/team": "added",
        "/spec/description": "changed",
        "/spec/timeoutMillis": "changed",
    }
    assert weather.diff.breaking == ()


def test_prune_deletes_only_resources_labelled_for_this_project() -> None:
    plan = plan_case(GOLDEN / "prune_safety")
    assert keys(plan, Action.DELETE) == ["ContextPolicy/demo-leftover"]
    # Unlabelled (made in the UI) and another project's resources are never deleted, nor shown.
    assert "FunctionDefinition/hand-made" not in keys(plan)
    assert "Prompt/billing-prompt" not in keys(plan)


def test_without_prune_nothing_is_deleted() -> None:
    case = load_case(GOLDEN / "delete_with_prune")
    plan = make_plan(case.desired, case.live, replace(case.options, prune=False), case.digest)
    assert plan.deletes == 0 and keys(plan) == ["FunctionDefinition/get-weather"]
    pruned = plan_case(GOLDEN / "delete_with_prune")
    old = by_key(pruned)["FunctionDefinition/old-lookup"]
    assert (
        old.action is Action.DELETE
        and old.after is None
        and old.etag == "fd-8"
        and old.live_id == "old-lookup"
    )


def test_dependency_order_creates_before_referrers_and_deletes_reversed() -> None:
    plan = plan_case(GOLDEN / "dependency_order")
    order = keys(plan)
    assert order.index("FunctionDefinition/z-function") < order.index("Prompt/a-prompt")
    assert order.index("ContextPolicy/z-policy") < order.index("Prompt/a-prompt")
    first_delete = min(i for i, c in enumerate(plan.changes) if c.action is Action.DELETE)
    assert all(c.action is not Action.DELETE for c in plan.changes[:first_delete])
    assert order.index("Prompt/old-prompt") < order.index("FunctionDefinition/old-tool")
    assert order.index("Prompt/old-prompt") < order.index("ContextPolicy/old-policy")
    changes = by_key(plan)
    # old-tool goes only after both prompts stop referencing it (one deleted, one updated).
    assert set(changes["FunctionDefinition/old-tool"].depends_on) == {
        ResourceKey(Kind.PROMPT, "old-prompt"),
        ResourceKey(Kind.PROMPT, "keeper"),
    }
    assert changes["ContextPolicy/old-policy"].depends_on == (ResourceKey(Kind.PROMPT, "old-prompt"),)


def test_order_changes_is_stable_whatever_the_input_order() -> None:
    plan = plan_case(GOLDEN / "dependency_order")
    assert order_changes(reversed(plan.changes)) == plan.changes


BREAKING = {
    "removed-param": ["parameter 'units' removed"],
    "added-required-param": ["required parameter 'country' added"],
    "became-required": ["parameter 'country' became required"],
    "narrowed-type": ['parameter \'amount\' type changed from "number" to "integer"'],
    "enum-value-removed": ["parameter 'units' enum value(s) \"kelvin\" removed"],
    "enum-added": ["parameter 'units' enum added"],
    "bounds-narrowed": [
        "parameter 'city' maxLength lowered from 255 to 100",
        "parameter 'city' minLength raised from 1 to 3",
        "parameter 'count' maximum lowered from 10 to 5",
        "parameter 'count' minimum raised from 0 to 1",
    ],
    "nested-removed": ["parameter 'address.zip' removed"],
    "non-breaking": [],
}


def test_breaking_parameter_changes_are_classified() -> None:
    plan = plan_case(GOLDEN / "breaking")
    found = {c.key.name: [b.reason for b in c.diff.breaking] for c in plan.changes if c.diff is not None}
    assert found == BREAKING


def test_ignore_differences_hide_fields_per_kind_and_per_name() -> None:
    changes = by_key(plan_case(GOLDEN / "ignore_differences"))
    assert changes["Prompt/edited-in-ui"].action is Action.NO_OP
    assert changes["FunctionDefinition/get-weather"].action is Action.NO_OP
    also = changes["Prompt/also-edited"]
    assert also.diff is not None and [f.path for f in also.diff.fields] == ["/spec/version"]
    assert also.diff.template_diffs == {}
    # The rule names get-weather only: get-time's description still counts.
    assert changes["FunctionDefinition/get-time"].action is Action.UPDATE


def test_targets_bring_their_dependencies_like_terraform() -> None:
    plan = plan_case(GOLDEN / "targets")
    assert sorted(keys(plan)) == [
        "ContextPolicy/shared-policy",
        "FunctionDefinition/new-tool",
        "Prompt/targeted",
    ]


def test_excludes_leave_out_their_dependants() -> None:
    plan = plan_case(GOLDEN / "excludes")
    assert sorted(keys(plan)) == [
        "ContextPolicy/shared-policy",
        "FunctionDefinition/unrelated",
        "Prompt/other-prompt",
    ]


def test_live_checks_name_resource_field_and_value() -> None:
    problems = plan_case(GOLDEN / "live_checks").live_checks
    assert len(problems) == 5
    assert any("Prompt/future-model" in p and "spec.modelId" in p and "'gpt-9'" in p for p in problems)
    assert any("ContextPolicy/too-big" in p and "hardLimit 10000" in p and "8192" in p for p in problems)
    assert any("attributeMappings[1].dataType" in p and "'tier'" in p and "'number'" in p for p in problems)
    assert any("attributeMappings[2].attribute 'region'" in p for p in problems)
    assert any("ContextPolicy/lost-flow" in p and "'flow-404'" in p for p in problems)


def test_plan_json_round_trips_and_refuses_unknown_versions() -> None:
    for folder in sorted(GOLDEN.iterdir()):
        plan = plan_case(folder)
        assert plan_from_json(plan_to_json(plan)) == plan
    document = plan_to_json(plan_case(GOLDEN / "update"))
    with pytest.raises(PlanFileError, match="format_version"):
        plan_from_json({**document, "format_version": "2.0"})
    with pytest.raises(PlanFileError, match="malformed"):
        plan_from_json({**document, "changes": [{"action": "update"}]})


def test_unchanged_resources_never_reach_deepdiff(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = diff_module.deep_diff

    def counting(before: object, after: object) -> object:
        calls.append(before)
        return real(before, after)

    monkeypatch.setattr(diff_module, "deep_diff", counting)
    plan_case(GOLDEN / "unchanged")
    assert calls == []
    plan = plan_case(GOLDEN / "update")
    assert len(calls) == plan.updates == 2


def test_duplicate_manifests_are_refused() -> None:
    case = load_case(GOLDEN / "create")
    with pytest.raises(ValueError, match="more than once"):
        make_plan([*case.desired, case.desired[0]], [], case.options, "")


def test_a_resource_kept_out_of_adoption_gets_no_managed_by_label() -> None:
    manifests = parse_manifests("""
apiVersion: reconciler.genesys.cloud/v1
kind: FunctionDefinition
metadata: {name: f, annotations: {reconciler.genesys.cloud/adopt: "false"}, labels: {a: b}}
spec: {name: f, description: d, timeoutMillis: 1, parameters: {type: object, properties: {}}}
""")
    plan = make_plan(manifests, [], load_case(GOLDEN / "create").options, "")
    assert plan.changes[0].after is not None and plan.changes[0].after["labels"] == {"a": "b"}


def test_ignore_rules_refuse_a_pointer_without_a_slash() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        IgnoreRules.from_config([IgnoreDifferences(kind=Kind.PROMPT, json_pointers=["template"])])


def test_action_symbols_are_what_users_see() -> None:
    assert [a.symbol for a in Action] == ["+", "~", "-", " ", "<"]
