"""Golden plans: each tests/golden/<case>/ must plan to exactly its plan.json and plan.txt.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/plan``, then
read the diff of the golden files before committing: they are the review.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.plan_json import plan_from_json, plan_to_json
from reconciler.render import render_json, render_text
from tests.plan.cases import case_dirs, plan_case


@pytest.mark.parametrize("folder", case_dirs(), ids=lambda p: p.name)
def test_golden_case(folder: Path) -> None:
    plan = plan_case(folder)
    outputs = {"plan.json": render_json(plan), "plan.txt": render_text(plan, color=False)}
    assert plan_from_json(plan_to_json(plan)) == plan
    if os.environ.get("UPDATE_GOLDEN") == "1":
        for name, text in outputs.items():
            (folder / name).write_text(text, encoding="utf-8")
        return
    for name, text in outputs.items():
        expected_file = folder / name
        assert expected_file.exists(), f"{expected_file} is missing: run with UPDATE_GOLDEN=1"
        assert text == expected_file.read_text(encoding="utf-8"), (
            f"{expected_file} differs from the planner's output; if the change is intended, "
            "regenerate with UPDATE_GOLDEN=1 and review the diff"
        )


def test_there_are_golden_cases() -> None:
    assert len(case_dirs()) >= 10
