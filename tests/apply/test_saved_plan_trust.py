"""A saved plan is a promise: apply re-derives it and refuses what the inputs do not justify.

Every test drives the CLI against a real emulator on a loopback socket. In each refused case the
org is left exactly as it was (compared resource by resource) and nothing was journaled.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.server import running_emulator
from reconciler.journal import Journal, JournalLock, RecordType, verify
from tests.conftest import Org, function_manifest

PROMPT = """\
apiVersion: reconciler.genesys.cloud/v1
kind: Prompt
metadata: {{name: {name}}}
spec:
  version: 1.0.0
  modelId: genesys-llm-v4
  maxTokens: 500
  template: "{template}"
"""
FN = "/api/v2/ai/llm/function-definitions"
PROMPTS = "/api/v2/ai/llm/prompts"
JOURNAL = Path(".reconciler") / "journal.jsonl"


def write_manifests(root: Path, description: str = "Looks things up.", template: str = "Hello.") -> None:
    folder = root / "manifests"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        text = function_manifest(f"func-{i}", description)
        (folder / f"func-{i}.yaml").write_text(text)
    (folder / "prompt.yaml").write_text(PROMPT.format(name="helper", template=template))


def cli(org: Org, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={**org.environ(), **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def snapshot(org: Org) -> dict[str, Any]:
    """Every resource in the org with its etag: what 'nothing was written' is checked against."""
    return {
        kind: sorted((r.get("id"), r.get("etag")) for r in org.listing(f"/api/v2/ai/llm/{kind}"))
        for kind in ("function-definitions", "prompts", "context-policies")
    }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, org: Org) -> Path:
    (tmp_path / "reconciler.yaml").write_text("project: trust\nmanifests: [manifests]\n")
    write_manifests(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out = cli(org, "apply", "--auto-approve")
    assert code == 0, out
    # Another team's function, in the same org, which this project does not manage.
    theirs = {
        "id": "func-theirs",
        "name": "theirs",
        "description": "Someone else's.",
        "timeoutMillis": 1000,
        "parameters": {"type": "object", "properties": {}},
    }
    assert org.api("PUT", f"{FN}/func-theirs", theirs, {"If-None-Match": "*"}).status_code == 201
    write_manifests(tmp_path, description="Looks things up, revised.", template="Hello again.")
    code, out = cli(org, "plan", "-o", "plan.json")
    assert code == 0 and "Saved the plan" in out, out
    return tmp_path


def tamper(path: Path, change: dict[str, Any] | None = None, **fields: Any) -> None:
    document = json.loads(path.read_text())
    if change is not None:
        document["changes"].append(change)
    document.update(fields)
    path.write_text(json.dumps(document))


def their_function(org: Org, action: str, etag: str) -> dict[str, Any]:
    live = org.api("GET", f"{FN}/func-theirs").json()
    body = {
        "spec": {
            "name": "theirs",
            "description": "Overwritten!",
            "timeoutMillis": 1000,
            "parameters": {"type": "object", "properties": {}},
        },
        "labels": {},
    }
    return {
        "action": action,
        "kind": "FunctionDefinition",
        "name": "func-theirs",
        "reason": "injected",
        "before": {"spec": live, "labels": {}},
        "after": None if action == "delete" else body,
        "diff": None,
        "etag": etag,
        "live_id": "func-theirs",
        "depends_on": [],
    }


def assert_refused(org: Org, project: Path, message: str, *args: str) -> None:
    before = snapshot(org)
    journal_before = (project / JOURNAL).read_bytes()
    code, out = cli(org, "apply", "plan.json", *args)
    assert code == 1, out
    assert message in out, out
    assert snapshot(org) == before, "the org was written to"
    assert (project / JOURNAL).read_bytes() == journal_before, "a refused plan was journaled"


def test_the_untampered_plan_applies(org: Org, project: Path) -> None:
    code, out = cli(org, "apply", "plan.json")
    assert code == 0, out
    assert "3 updated" in out or "4 updated" in out, out
    code, out = cli(org, "plan", "--detailed-exitcode")
    assert code == 0, out


@pytest.mark.parametrize("etag", ["real", "*"])
def test_an_injected_update_of_an_unmanaged_resource_is_refused(org: Org, project: Path, etag: str) -> None:
    live_etag = org.api("GET", f"{FN}/func-theirs").headers["ETag"]
    tamper(project / "plan.json", their_function(org, "update", live_etag if etag == "real" else "*"))
    assert_refused(org, project, "func-theirs")


def test_an_injected_delete_is_refused(org: Org, project: Path) -> None:
    live_etag = org.api("GET", f"{FN}/func-theirs").headers["ETag"]
    tamper(project / "plan.json", their_function(org, "delete", live_etag))
    assert_refused(org, project, "does not manage")


def test_an_injected_rollback_is_refused(org: Org, project: Path) -> None:
    live_etag = org.api("GET", f"{FN}/func-theirs").headers["ETag"]
    tamper(project / "plan.json", their_function(org, "rollback", live_etag))
    assert_refused(org, project, "never rolls back")


def test_a_retargeted_live_id_is_refused(org: Org, project: Path) -> None:
    other = org.api(
        "POST",
        PROMPTS,
        {
            "name": "their-prompt",
            "version": "1.0.0",
            "modelId": "genesys-llm-v4",
            "maxTokens": 100,
            "template": "x",
        },
    ).json()
    document = json.loads((project / "plan.json").read_text())
    for change in document["changes"]:
        if change["kind"] == "Prompt":
            change["live_id"], change["etag"] = other["id"], other["etag"]
    (project / "plan.json").write_text(json.dumps(document))
    assert_refused(org, project, "live id")


def test_a_changed_body_is_refused(org: Org, project: Path) -> None:
    document = json.loads((project / "plan.json").read_text())
    for change in document["changes"]:
        if change["name"] == "func-0":
            change["after"]["spec"]["description"] = "Something the reviewer never saw."
    (project / "plan.json").write_text(json.dumps(document))
    assert_refused(org, project, "the body to write")


def test_a_plan_for_another_org_is_refused(org: Org, project: Path) -> None:
    document = json.loads((project / "plan.json").read_text())
    document["origin"]["org_id"] = "another-org"
    (project / "plan.json").write_text(json.dumps(document))
    assert_refused(org, project, "these credentials reach org")


def test_a_plan_for_another_environment_is_refused(
    org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two environments, two orgs: a plan made for staging is never applied to prod."""
    with running_emulator(EmulatorConfig(db=":memory:", rate_limit_per_minute=100_000, seed=2)) as prod_url:
        prod = Org(prod_url)
        credentials = "{clientIdEnv: GENESYS_CLIENT_ID, clientSecretEnv: GENESYS_CLIENT_SECRET}"
        (tmp_path / "reconciler.yaml").write_text(
            "project: trust\nmanifests: [manifests]\nenvironments:\n"
            f'  staging: {{baseUrl: "{org.base_url}", credentials: {credentials}}}\n'
            f'  prod: {{baseUrl: "{prod_url}", credentials: {credentials}}}\n'
        )
        write_manifests(tmp_path)
        monkeypatch.chdir(tmp_path)
        code, out = cli(org, "plan", "--env", "staging", "-o", "plan.json")
        assert code == 0, out
        before = snapshot(prod)
        code, out = cli(prod, "apply", "plan.json", "--env", "prod")
        assert code == 1 and "made for environment 'staging', not 'prod'" in out, out
        assert snapshot(prod) == before == {"function-definitions": [], "prompts": [], "context-policies": []}


def test_a_plan_made_from_explicit_paths_applies(org: Org, project: Path) -> None:
    (project / "more").mkdir()
    (project / "more" / "extra.yaml").write_text(function_manifest("func-extra", "More."))
    code, out = cli(org, "plan", "more", "-o", "extra.json")
    assert code == 0, out
    code, out = cli(org, "apply", "extra.json")
    assert code == 0 and "1 created" in out, out
    assert org.api("GET", f"{FN}/func-extra").status_code == 200


def test_a_plan_applied_once_is_refused_the_second_time(org: Org, project: Path) -> None:
    code, out = cli(org, "apply", "plan.json")
    assert code == 0, out
    assert_refused(org, project, "was applied already")


def test_a_keyed_mac_catches_any_edit(org: Org, project: Path) -> None:
    key = {"RECONCILER_PLAN_KEY": "canary-plan-key-0123456789"}
    code, out = cli(org, "plan", "-o", "plan.json", env=key)
    assert (
        code == 0
        and "canary-plan-key" not in out
        and "canary-plan-key" not in (project / "plan.json").read_text()
    )
    document = json.loads((project / "plan.json").read_text())
    document["summary"]["update"] = 99  # even data apply does not read is covered
    (project / "plan.json").write_text(json.dumps(document))
    before = snapshot(org)
    code, out = cli(org, "apply", "plan.json", env=key)
    assert code == 1 and "MAC does not match" in out, out
    assert snapshot(org) == before


def test_a_change_made_since_the_plan_is_a_conflict_not_overwritten(org: Org, project: Path) -> None:
    live = org.api("GET", f"{FN}/func-1")
    edited = {**live.json(), "description": "Edited by hand after the plan."}
    assert org.api("PUT", f"{FN}/func-1", edited, {"If-Match": live.headers["ETag"]}).status_code == 200
    code, out = cli(org, "apply", "plan.json")
    assert code == 3, out
    assert org.api("GET", f"{FN}/func-1").json()["description"] == "Edited by hand after the plan."
    assert org.api("GET", f"{FN}/func-0").json()["description"] == "Looks things up, revised."


# --- one writer per journal ---------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(org: Org, project: Path) -> None:
    with JournalLock(project / JOURNAL, actor="someone", command="apply"):
        code, out = cli(org, "apply", "plan.json")
    assert code == 1, out
    assert "in use by run (starting) (apply) of someone" in out and f"pid {os.getpid()}" in out, out


def test_eight_processes_applying_at_once_keep_one_chain(org: Org, project: Path) -> None:
    """Each process applies its own target; they wait for the lock in turn and all land."""
    env = {**os.environ, **org.environ(), "RECONCILER_LOCK_TIMEOUT": "120"}
    for i in range(8):
        (project / "manifests" / f"par-{i}.yaml").write_text(function_manifest(f"par-{i}", "Parallel."))
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from reconciler.cli import main; main()",
                "apply",
                "--auto-approve",
                "--target",
                f"FunctionDefinition/par-{i}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(8)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, outputs
    assert verify(project / JOURNAL).ok
    records = list(Journal(project / JOURNAL).records())
    starts = [r for r in records if r.type is RecordType.RUN_START]
    ends = [r for r in records if r.type is RecordType.RUN_END]
    assert len(starts) == len(ends) == 9  # the fixture's apply and the eight
    # Runs never interleave: each run's records are contiguous in the chain.
    order = [r.run_id for r in records]
    assert all(
        order.index(run) + order.count(run) - 1 == len(order) - 1 - order[::-1].index(run)
        for run in set(order)
    )
    code, out = cli(org, "apply", "--auto-approve")
    assert code == 0, out


# --- read-only commands never modify the journal ------------------------------------------------


def test_reading_commands_never_change_the_journal(org: Org, project: Path) -> None:
    path = project / JOURNAL
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[-1])
    record["data"]["summary"] = {"counts": {"applied": 999}}
    tampered = b"".join(lines[:-1]) + json.dumps(record).encode() + b"\n"
    path.write_bytes(tampered)
    for command in (["journal", "list"], ["journal", "show", record["run_id"]], ["journal", "verify"]):
        code, out = cli(org, *command)
        assert code == 1 and ("edited" in out or "tampered" in out), (command, out)
        assert path.read_bytes() == tampered, command
    # A writer refuses it too: a complete record that fails its hash is tampering, not a torn write.
    code, out = cli(org, "apply", "--auto-approve")
    assert code == 1 and "tampered" in out, out
    assert path.read_bytes() == tampered
    # A genuinely torn tail is skipped by readers and set aside only by a writer.
    torn = b"".join(lines) + b'{"seq": 9'
    path.write_bytes(torn)
    code, out = cli(org, "journal", "list")
    assert code == 0 and "not read" in out, out
    assert path.read_bytes() == torn
    code, out = cli(org, "apply", "plan.json")
    assert code == 0 and "set aside" in out, out
    assert verify(path).ok


# --- storage faults -------------------------------------------------------------------------


def test_a_full_disk_stops_the_writes_and_the_next_run_recovers(org: Org, project: Path) -> None:
    """The journal hits a file-size limit mid-run (as a full disk would): apply stops sending
    writes, exits 1 without a traceback; the next run records what became of the lost outcome."""
    path = project / JOURNAL
    # Room for the run start and the four changes' intents (about 3.2 kB, written together as
    # they are sent together), not for their outcomes.
    limit = path.stat().st_size + 3500

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, "-c", "from reconciler.cli import main; main()", "apply", "plan.json"],
        env={**os.environ, **org.environ()},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limited,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output and "cannot write the audit journal" in output, output
    assert verify(path).ok  # what was written is intact
    sent = len(list(Journal(path).records()))
    lost = Journal(path).unfinished_intents()
    assert lost, "the limit falls after writes were sent: their outcomes are what was lost"
    code, out = cli(org, "apply", "--auto-approve")
    assert code == 0, out
    assert out.count("Recorded a lost outcome") == len(lost), out
    assert verify(path).ok
    journal = Journal(path)
    assert journal.unfinished_intents() == []
    assert len(list(journal.records())) > sent
    code, out = cli(org, "plan", "--detailed-exitcode")
    assert code == 0, out
