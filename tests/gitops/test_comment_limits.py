"""Plans and drift reports of 2,000 resources fit GitHub's comments, header included.

The headers below are the ones plan.yml and drift.yml put before a part, with the longest owner
and repository names GitHub allows; every part must fit 65,536 characters with them, and parts
aim under 60,000. Plans are built purely (bench/generate.py's manifests, no emulator).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest

from bench.generate import generate
from reconciler import drift
from reconciler.kinds import adapter_for
from reconciler.models import MANAGED_BY_LABEL, MANIFEST_MODELS, Kind, LiveResource
from reconciler.plan import Plan, PlanOptions, make_plan
from reconciler.render import COMMENT_LIMIT, PART_SEPARATOR, render_markdown
from tests.plan.cases import GOLDEN, plan_case
from tests.plan.test_render import assert_balanced

RUN_URL = f"https://github.com/{'o' * 39}/{'r' * 100}/actions/runs/{9 * 10**18}"
SHA = "0123456789abcdef0123456789abcdef01234567"


def plan_header(env: str, part: int) -> str:
    """What plan.yml's sticky-comment script puts before part ``part``."""
    tag = f"<!-- reconciler-plan:{env} --><!-- part:{part} -->"
    return f"{tag}\n#### Plan for `{env}` at {SHA[:7]} ([run]({RUN_URL}))\n\n"


def drift_posted(env: str, parts: list[str], k: int, part: str) -> str:
    """What drift.yml posts: the issue body for the first part, a comment for the others."""
    if k > 0:
        return f"**The drift changed** ({RUN_URL}):\n\n{part.strip()}"
    marker = f"<!-- reconciler-drift:{env} report:{'f' * 16} -->"
    more = f"\n\n_Continued in the comments below (parts 2-{len(parts)})._" if len(parts) > 1 else ""
    return f"{marker}\n{part.strip()}{more}\n\nLast checked by {RUN_URL}"


def manifests(docs: list[dict[str, Any]]) -> list[Any]:
    return [MANIFEST_MODELS[Kind(d["kind"])].model_validate(d) for d in docs]


def live_of(docs: list[dict[str, Any]]) -> list[LiveResource]:
    """The documents as the service would list them, managed by project `bench`."""
    out = []
    for doc in docs:
        adapter = adapter_for(Kind(doc["kind"]))
        labels = {**doc["metadata"]["labels"], MANAGED_BY_LABEL: "bench"}
        body = adapter.to_wire(doc["metadata"]["name"], adapter.with_server_defaults(doc["spec"]), labels)
        body.setdefault("id", doc["metadata"]["name"])
        out.append(adapter.from_wire({**body, "etag": '"1"'}))
    return out


@cache
def creating_plan() -> Plan:
    """2,000 creates: the plan that used to become 47 comments."""
    return make_plan(manifests(generate(2000)), [], PlanOptions(project="bench", environment="prod"), "d")


@cache
def drift_report() -> drift.DriftReport:
    """About 2,000 drifted resources: live state generated with another seed, plus extras."""
    live = live_of(generate(2000, seed=8) + generate(2100)[2000:])
    options = PlanOptions(project="bench", environment="prod", prune=True)
    plan = make_plan(manifests(generate(2000)), live, options, "d")
    return drift.classify(plan, live)


def assert_fits(parts: list[str], posted: Callable[[int, str], str]) -> None:
    """Every part under 60,000 characters, balanced, and within the limit as ``posted``."""
    for k, part in enumerate(parts):
        assert len(part) < 60_000, (k, len(part))
        assert len(posted(k, part)) <= COMMENT_LIMIT
        assert_balanced(part)


def test_a_2000_resource_plan_is_summarised_in_at_most_three_parts() -> None:
    plan = creating_plan()
    assert plan.creates == 2000
    parts = render_markdown(plan, max_parts=3)
    assert len(parts) <= 3
    assert_fits(parts, lambda k, part: plan_header("prod", k) + part.strip())
    everything = "".join(parts)
    # Counts per kind and action, some changes in full, every other one on a line of its own.
    assert "| FunctionDefinition | 800 | 0 |" in everything
    assert "| Prompt | 800 | 0 |" in everything
    full = everything.count("<details>")
    listed = everything.count("\n+ ")
    assert full > 10 and full + listed == 2000
    assert "The complete plan is in the workflow run's job summary and its `plan` artifact." in parts[0]


def test_a_2000_resource_plan_in_full_still_fits_each_comment_with_its_header() -> None:
    parts = render_markdown(creating_plan())  # no cap: the old 47 parts, now each with room
    assert len(parts) > 40
    assert_fits(parts, lambda k, part: plan_header("prod", k) + part.strip())


@pytest.mark.parametrize("reserve", [0, 10_000])
def test_reserve_is_the_room_left_for_the_callers_header(reserve: int) -> None:
    parts = render_markdown(creating_plan(), reserve=reserve, max_parts=3)
    assert max(map(len, parts)) <= COMMENT_LIMIT - reserve
    assert max(map(len, parts)) > COMMENT_LIMIT - reserve - 2_000  # and the room is used


def test_when_even_the_list_does_not_fit_its_tail_is_counted() -> None:
    parts = render_markdown(creating_plan(), max_parts=1, limit=30_000)
    (part,) = parts
    assert len(part) <= 30_000
    assert "more: see the workflow run's job summary" in part


def test_a_2000_resource_drift_report_splits_and_shortens_the_same_way() -> None:
    report = drift_report()
    assert len(report.items) > 1900
    text = drift.render_markdown(report)
    parts = text.split(PART_SEPARATOR)
    assert len(parts) > 3  # uncapped it is long: 116,911 characters in one body used to fail
    assert_fits(parts, lambda k, part: drift_posted("prod", parts, k, part))
    capped = drift.render_markdown_parts(report, max_parts=3)
    assert len(capped) == 3
    assert_fits(capped, lambda k, part: drift_posted("prod", capped, k, part))
    assert "more: see the workflow run's job summary and its `drift` artifact" in capped[-1]
    assert capped[1].startswith("(continued, part 2 of 3)")


def test_no_drift_is_one_short_part() -> None:
    assert drift.render_markdown(drift.DriftReport("prod", ())) == (
        "### ✅ No drift in <code>prod</code>\n\nThe live org matches git.\n"
    )


def test_a_summarised_plan_shows_deletions_in_full_first_and_lists_the_rest() -> None:
    plan = plan_case(GOLDEN / "dependency_order")  # 3 creates, 1 update, 3 deletes
    (part,) = render_markdown(plan, limit=2200, reserve=0, max_parts=1)
    assert len(part) <= 2200
    assert_balanced(part)
    full = re.findall(r"<summary><code>.</code> (\w+) <b>", part)
    assert full[:3] == ["delete", "delete", "delete"] and len(full) < 7
    listed = part.split("**Other changes**", 1)[1]
    assert len(full) + listed.count("\n+ ") + listed.count("\n~ ") == 7
    assert "| Prompt | 1 | 1 | 1 | 0 |" in part
