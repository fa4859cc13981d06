"""Rendering plans: text, JSON and Markdown chunks for pull-request comments."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from reconciler.models import Kind, LiveResource, ResourceKey
from reconciler.plan import Action, Plan, PlanOptions, make_plan
from reconciler.plan_json import plan_from_json
from reconciler.render import render_json, render_markdown, render_text
from tests.plan.cases import GOLDEN, parse_manifests, plan_case

FENCE = re.compile(r"^ {0,3}(`{3,})(.*)$")
MANAGED = {"reconciler.genesys.cloud/managed-by": "demo"}


def assert_balanced(chunk: str) -> None:
    """Code fences (CommonMark rules) and <details> outside code are balanced in ``chunk``."""
    fence = 0
    depth = 0
    for line in chunk.splitlines():
        match = FENCE.match(line)
        if fence:
            if match and len(match.group(1)) >= fence and not match.group(2).strip():
                fence = 0
            continue
        if match:
            fence = len(match.group(1))
            continue
        depth += line.count("<details>") - line.count("</details>")
        assert depth >= 0, line
    assert fence == 0, "a code block is left open"
    assert depth == 0, "a <details> is left open"


def prompt_yaml(name: str, template: str) -> str:
    body = "\n".join("    " + line for line in template.splitlines())
    return f"""apiVersion: reconciler.genesys.cloud/v1
kind: Prompt
metadata: {{name: {name}}}
spec:
  version: 1.0.0
  modelId: gpt-4o
  maxTokens: 100000
  template: |
{body}
"""


def prompt_plan(templates: dict[str, tuple[str, str]]) -> Plan:
    """A plan updating one prompt per entry: name -> (live template, git template)."""
    desired = parse_manifests("---\n".join(prompt_yaml(n, after) for n, (_, after) in templates.items()))
    live = [
        LiveResource(
            ResourceKey(Kind.PROMPT, n),
            f"id-{n}",
            f"etag-{n}",
            {
                "version": "1.0.0",
                "modelId": "gpt-4o",
                "maxTokens": 100000,
                "template": before,
                "variables": [],
                "contextRules": [],
                "functions": [],
                "variants": [],
            },
            MANAGED,
        )
        for n, (before, _) in templates.items()
    ]
    return make_plan(desired, live, PlanOptions(project="demo", environment="prod"), "digest")


def test_text_is_plain_without_color_and_ansi_with_it() -> None:
    plan = plan_case(GOLDEN / "update")
    plain, colored = render_text(plan, color=False), render_text(plan, color=True)
    assert "\033[" not in plain and "\033[" in colored
    assert re.sub(r"\033\[[0-9;]*m", "", colored) == plain
    assert plain.rstrip().endswith("Plan: 0 to create, 2 to update, 0 to delete.")
    assert '~ /spec/description: "Current weather for a city." -> "Current weather and a 3-day' in plain


def test_text_for_no_changes() -> None:
    assert render_text(plan_case(GOLDEN / "unchanged"), color=False) == (
        "No changes. Live org matches the manifests.\n"
    )


def test_breaking_changes_are_flagged_everywhere() -> None:
    plan = plan_case(GOLDEN / "breaking")
    text = render_text(plan, color=False)
    assert "(BREAKING: parameter 'units' removed)" in text
    assert "(BREAKING: parameter 'country' became required at /spec/parameters/properties/country)" in text
    markdown = "".join(render_markdown(plan))
    assert markdown.count("⚠️ BREAKING</summary>") == 8  # every case but non-breaking
    assert "| <code>~</code> update | FunctionDefinition | <code>non-breaking</code> |  |" in markdown


def secret_redactor(kind: Kind, spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    if "template" in out:
        out["template"] = "(sensitive, sha256:abc)"
    if "description" in out:
        out["description"] = "(sensitive, sha256:def)"
    return out


def test_redaction_reaches_every_output_and_the_diff_values() -> None:
    plan = plan_case(GOLDEN / "update")
    outputs = [
        render_text(plan, color=False, redact=secret_redactor),
        render_json(plan, redact=secret_redactor),
        *render_markdown(plan, redact=secret_redactor),
    ]
    for out in outputs:
        assert "Greet {{customer}}" not in out and "3-day forecast" not in out
        assert "(sensitive, sha256:" in out
    # The unredacted plan does show them (the test above would be vacuous otherwise).
    assert "3-day forecast" in render_text(plan, color=False)
    saved = plan_from_json(json.loads(render_json(plan, redact=secret_redactor)))
    assert saved.changes[0].after is not None
    assert saved.changes[0].after["spec"]["description"] == "(sensitive, sha256:def)"


def test_json_is_the_versioned_plan_with_sorted_keys() -> None:
    plan = plan_case(GOLDEN / "dependency_order")
    text = render_json(plan)
    document = json.loads(text)
    assert document["format_version"] == "1.0"
    assert document["summary"] == {"create": 3, "update": 1, "delete": 3, "no-op": 0, "rollback": 0}
    assert text == json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert plan_from_json(document) == plan


def test_markdown_of_300_resources_is_chunked_safely() -> None:
    lines = [
        f"Line {i}: please answer the customer {{{{customer}}}} politely and briefly." for i in range(60)
    ]
    templates = {}
    for n in range(300):
        before = "\n".join(lines) + "\n"
        after = (
            "\n".join(line + (" Thanks." if i % 2 == n % 2 else "") for i, line in enumerate(lines)) + "\n"
        )
        templates[f"p-{n:04d}"] = (before, after)
    plan = prompt_plan(templates)
    assert plan.updates == 300
    chunks = render_markdown(plan)
    assert len(chunks) > 3
    for k, chunk in enumerate(chunks, start=1):
        assert len(chunk) < 65_536
        assert_balanced(chunk)
        if k > 1:
            assert chunk.startswith(f"(continued, part {k} of {len(chunks)})\n")
    everything = "".join(chunks)
    for n in range(300):
        assert everything.count(f"<b>Prompt/p-{n:04d}</b>") == 1
        assert everything.count(f"<code>p-{n:04d}</code>") == 1  # its summary-table row
    assert chunks[0].startswith("### Reconciler plan for <code>prod</code>")
    assert "**Plan: 0 to create, 300 to update, 0 to delete.**" in chunks[0]


def test_an_oversized_section_is_cut_with_a_note_and_stays_balanced() -> None:
    huge = "\n".join(f"{i:05d} " + "x" * 90 for i in range(2000)) + "\n"
    plan = prompt_plan({"huge": ("", huge), "small": ("a\n", "b\n")})
    chunks = render_markdown(plan, limit=20_000)
    for chunk in chunks:
        assert len(chunk) < 20_000
        assert_balanced(chunk)
    everything = "".join(chunks)
    assert re.search(r"_Truncated: [\d,]+ of [\d,]+ characters of this section were cut", everything)
    assert "<b>Prompt/small</b>" in everything and "+b" in everything


def test_content_can_never_close_a_code_block_or_a_details_early() -> None:
    nasty = "```\n</details>\n ````\nstill inside\n"
    plan = prompt_plan({"nasty": ("x\n", nasty)})
    previews = {ResourceKey(Kind.PROMPT, "nasty"): "-old render\n+new ``` render"}
    (chunk,) = render_markdown(plan, previews=previews)
    assert_balanced(chunk)
    assert "`````diff" in chunk  # longer than the longest backtick run inside
    assert "**Rendered prompt**" in chunk and "+new ``` render" in chunk


def test_markdown_escapes_names_outside_code() -> None:
    plan = prompt_plan({"a<details>|b": ("x\n", "y\n")})
    (chunk,) = render_markdown(plan)
    assert_balanced(chunk)
    assert "a&lt;details&gt;&#124;b" in chunk


def test_markdown_for_no_changes_and_live_checks() -> None:
    (chunk,) = render_markdown(plan_case(GOLDEN / "unchanged"))
    assert "No changes. Live org matches the manifests." in chunk
    checks = "".join(render_markdown(plan_case(GOLDEN / "live_checks")))
    assert "**Live checks failed:**" in checks and "'gpt-9'" in checks


def test_markdown_refuses_a_useless_limit() -> None:
    with pytest.raises(ValueError, match="too small"):
        render_markdown(plan_case(GOLDEN / "update"), limit=500)


def test_rollback_and_delete_symbols_in_text() -> None:
    plan = plan_case(GOLDEN / "dependency_order")
    text = render_text(plan, color=False)
    assert "  - FunctionDefinition/old-tool" in text and "  + Prompt/a-prompt" in text
    rolled = Plan(
        plan.environment,
        plan.project,
        "",
        tuple(
            c.__class__(
                Action.ROLLBACK, c.key, c.after, c.before, c.diff, "rollback of run r1", c.etag, c.live_id
            )
            for c in plan.changes
            if c.action is Action.UPDATE
        ),
    )
    assert "  < Prompt/keeper" in render_text(rolled, color=False)
    assert "Plan: 0 to create, 1 to update, 0 to delete." in render_text(rolled, color=False)


def test_thousands_of_live_check_problems_still_fit_the_chunks() -> None:
    plan = replace(
        plan_case(GOLDEN / "update"),
        live_checks=tuple(f"Prompt/p{i}: spec.modelId 'x{i}' unknown" for i in range(5000)),
    )
    chunks = render_markdown(plan, limit=20_000)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(chunk) < 20_000
        assert_balanced(chunk)
    assert "Prompt/p4999" in "".join(chunks)
