"""The audit journal kept in git: one chain across machines, a lease written into it, and a
branch whose history is checked. Every test drives the CLI against a real emulator on loopback,
with a local bare repository (``git init --bare``) as the remote; each "machine" is its own
folder (its own working copy in the user's cache, never in the checkout)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.errors import JournalError
from reconciler.journal import Journal, RecordType, current_lease, verify
from reconciler.journal_git import GitLocation, GitStore, redact
from reconciler.workspace import journal_cache_dir
from tests.conftest import Org, function_manifest

BRANCH = "reconciler-journal"
FN = "/api/v2/ai/llm/function-definitions"
IDENTITY = {
    "GIT_AUTHOR_NAME": "Audit Test",
    "GIT_AUTHOR_EMAIL": "audit@example.invalid",
    "GIT_COMMITTER_NAME": "Audit Test",
    "GIT_COMMITTER_EMAIL": "audit@example.invalid",
}


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in IDENTITY.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    path = tmp_path / "audit.git"
    subprocess.run(["git", "init", "--bare", "--quiet", str(path)], check=True, timeout=30)
    return path


def location(bare: Path) -> str:
    return f"git+file://{bare}#{BRANCH}"


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **IDENTITY},
        check=True,
    )
    return done.stdout


def write_manifests(machine: Path, description: str, names: tuple[str, ...] = ("a", "b")) -> None:
    folder = machine / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        text = function_manifest(f"func-{name}", description)
        (folder / f"func-{name}.yaml").write_text(text)


def machine(root: Path, org: Org, journal: str, description: str = "First.") -> Path:
    """A checkout of the project on one machine: reconciler.yaml whose staging environment
    keeps its journal in git (the project's own journal stays a local path)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "reconciler.yaml").write_text(
        "project: audit\nmanifests: [manifests]\n"
        "environments:\n"
        f"  staging:\n    baseUrl: {org.base_url}\n    journal: {journal}\n"
    )
    write_manifests(root, description)
    return root


def cli(where: Path, org: Org | None, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    previous = Path.cwd()
    os.chdir(where)
    try:
        environ = {**(org.environ() if org else {}), **(env or {})}
        result = CliRunner().invoke(main, list(args), env=environ)
    finally:
        os.chdir(previous)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def branch_file(bare: Path, name: str = "staging.jsonl", ref: str = BRANCH) -> str:
    return git("--git-dir", str(bare), "show", f"{ref}:{name}")


def branch_commits(bare: Path) -> list[list[str]]:
    """Every commit on the branch with its parents, oldest first."""
    out = git("--git-dir", str(bare), "rev-list", "--reverse", "--parents", BRANCH)
    return [line.split() for line in out.splitlines()]


def journal_of(bare: Path, tmp_path: Path, name: str = "staging.jsonl") -> Journal:
    copy = tmp_path / f"copy-{name}"
    copy.write_text(branch_file(bare, name))
    assert verify(copy).ok, verify(copy).problem
    return Journal(copy)


def runs_of(journal: Journal) -> list[Any]:
    return [r for r in journal.runs() if not r.command.startswith("break-lock")]


def snapshot(org: Org) -> list[tuple[Any, Any]]:
    return sorted((r.get("id"), r.get("etag")) for r in org.listing(FN))


def rechain(lines: list[str]) -> list[str]:
    """Records with their hashes and links made again: what a careful forger would push."""
    prev, out = "0" * 64, []
    for line in lines:
        record = json.loads(line)
        record.pop("hash")
        record["prev"] = prev
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        record["hash"] = prev = hashlib.sha256(text.encode()).hexdigest()
        out.append(json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    return out


# --- Two machines, one chain; a third reads, verifies and rolls back -----------------------------


def test_two_machines_continue_one_chain_and_a_third_rolls_back(tmp_path: Path, org: Org, bare: Path) -> None:
    where = location(bare)
    a = machine(tmp_path / "machine-a", org, where, "First.")
    code, out = cli(a, org, "apply", "--env", "staging", "--auto-approve")
    assert code == 0, out
    b = machine(tmp_path / "machine-b", org, where, "Second.")
    code, out = cli(b, org, "apply", "--env", "staging", "--auto-approve")
    assert code == 0, out
    second_run = out.split("Journal run ")[1].split(";")[0]

    # One chain on the branch, continued by machine B; one commit per push, linear.
    journal = journal_of(bare, tmp_path)
    applies = runs_of(journal)
    assert [r.command for r in applies] == ["apply", "apply"] and applies[1].run_id == second_run
    assert all(len(commit) <= 2 for commit in branch_commits(bare))
    assert len(branch_commits(bare)) >= 4  # a claim and a release for each run at least
    records = list(journal.records())
    claims = [r for r in records if r.type is RecordType.CLAIM]
    releases = [r for r in records if r.type is RecordType.RELEASE]
    assert len(claims) == len(releases) == 2 and current_lease(records) is None
    assert claims[0].data["cache"] != claims[1].data["cache"]  # two working copies
    environ = {"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}
    assert journal_cache_dir(a, environ).is_dir() and journal_cache_dir(b, environ).is_dir()
    assert not (a / ".reconciler" / "journal-git").exists()  # nothing a pull request could plant
    assert not (a / ".reconciler" / "journal.jsonl").exists()  # nothing was journaled locally only

    # Machine C: only the git location, no project at all.
    c = tmp_path / "machine-c"
    c.mkdir()
    code, out = cli(c, None, "journal", "list", "--journal", where, "--env", "staging")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [r.run_id for r in applies]
    code, out = cli(c, None, "journal", "list", "--journal", where, "--env", "staging", "--format", "json")
    assert code == 0, out
    listed = json.loads(out)
    assert [r["run_id"] for r in listed] == [r.run_id for r in applies]
    assert listed[1]["counts"] == {"applied": 2} and listed[1]["finished"] is True
    code, out = cli(c, None, "journal", "verify", "--journal", where, "--env", "staging")
    assert code == 0 and "intact" in out and "linear and append-only" in out, out
    code, out = cli(c, None, "journal", "list", "--journal", where)
    assert code == 1 and "no journal default.jsonl" in out and "staging.jsonl" in out, out
    code, out = cli(c, None, "journal", "show", second_run, "--journal", where, "--env", "staging")
    assert code == 0 and "outcome" in out, out

    # Machine C rolls back machine B's run from the journal in git.
    rollback_machine = machine(tmp_path / "machine-c-project", org, where, "Whatever is in git.")
    code, out = cli(rollback_machine, org, "rollback", second_run, "--env", "staging", "--auto-approve")
    assert code == 0, out
    assert org.api("GET", f"{FN}/func-a").json()["description"] == "First."
    journal = journal_of(bare, tmp_path)
    assert [r.command for r in runs_of(journal)] == ["apply", "apply", f"rollback run {second_run}"]
    assert all(len(commit) <= 2 for commit in branch_commits(bare))


# --- Two at once ---------------------------------------------------------------------------------


def test_two_machines_applying_at_once_keep_a_linear_branch_and_one_chain(
    tmp_path: Path, org: Org, bare: Path
) -> None:
    where = location(bare)
    machines = []
    for name in ("a", "b"):
        root = machine(tmp_path / f"machine-{name}", org, where)
        write_manifests(root, "Parallel.", names=(name, f"{name}2"))
        for other in {"a", "b"} - {name}:
            for stale in (root / "manifests").glob(f"func-{other}*.yaml"):
                stale.unlink()
        machines.append(root)
    env = {**os.environ, **org.environ(), **IDENTITY, "RECONCILER_LOCK_TIMEOUT": "120"}
    main_module = "from reconciler.cli import main; main()"
    apply_args = [sys.executable, "-c", main_module, "apply", "--env", "staging", "--auto-approve"]
    processes = [
        subprocess.Popen(
            [*apply_args, "--target", f"FunctionDefinition/func-{name}"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, root in zip(("a", "b"), machines, strict=True)
    ]
    outputs = [p.communicate(timeout=180)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert all("Traceback" not in out for out in outputs)
    assert {r["id"] for r in org.listing(FN)} >= {"func-a", "func-b"}

    commits = branch_commits(bare)
    assert all(len(commit) <= 2 for commit in commits), commits  # linear: no merge, no fork
    journal = journal_of(bare, tmp_path)
    records = list(journal.records())
    # The runs did not interleave: each claim is released before the next claim.
    order = [r.type for r in records if r.type in (RecordType.CLAIM, RecordType.RELEASE)]
    assert order == [RecordType.CLAIM, RecordType.RELEASE] * 2
    assert sorted(r.counts.get("applied", 0) for r in runs_of(journal)) == [1, 1]


def test_a_live_lease_is_refused_naming_it_and_a_dead_one_can_be_broken(
    tmp_path: Path, org: Org, bare: Path
) -> None:
    where = location(bare)
    # Another machine holds the lease (a run under way, or one that died holding it).
    holder = GitStore.at(where, environment="staging", cache_root=tmp_path / "holder-cache").writer(
        actor="someone-else", command="apply", environment="staging"
    )
    held = holder.__enter__()
    b = machine(tmp_path / "machine-b", org, where, "Second.")
    before = snapshot(org)
    code, out = cli(b, org, "apply", "--env", "staging", "--auto-approve")
    assert code == 1, out
    assert f"in use by run {holder.claim_id} (apply) of someone-else, started" in out, out
    assert f"--break-lock {holder.claim_id}" in out
    assert snapshot(org) == before  # no audit, no write

    code, out = cli(b, org, "apply", "--env", "staging", "--auto-approve", "--lock-timeout", "3")
    assert code == 1 and "in use by run" in out, out

    code, out = cli(b, org, "apply", "--env", "staging", "--auto-approve", "--break-lock", "not-a-run")
    assert code == 1 and "not by that run" in out and snapshot(org) == before, out

    code, out = cli(b, org, "apply", "--env", "staging", "--auto-approve", "--break-lock", holder.claim_id)
    assert code == 0 and "Took over the journal's lease" in out, out
    journal = journal_of(bare, tmp_path)
    (takeover,) = [r for r in journal.runs() if r.command.startswith("break-lock")]
    assert holder.claim_id in takeover.command
    claim = next(r for r in journal.records() if r.run_id == takeover.run_id)
    assert claim.data["broke"]["actor"] == "someone-else"

    # The run whose lease was taken can no longer publish: it never rewrites the branch.
    published = branch_file(bare)
    held.append(holder.claim_id, RecordType.NOTIFICATION, {"note": "late"})
    with pytest.raises(JournalError, match="moved on without this run"):
        holder.__exit__(None, None, None)
    assert branch_file(bare) == published
    assert all(len(commit) <= 2 for commit in branch_commits(bare))


# --- No audit, no write --------------------------------------------------------------------------


def test_an_unreachable_journal_means_nothing_is_written(tmp_path: Path, org: Org) -> None:
    before = snapshot(org)
    a = machine(tmp_path / "machine-a", org, f"git+file:///nonexistent/audit.git#{BRANCH}")
    code, out = cli(a, org, "apply", "--env", "staging", "--auto-approve")
    assert code == 1 and "cannot fetch the journal git+file:///nonexistent/audit.git" in out, out
    assert snapshot(org) == before

    # Credentials in a URL are never printed; git never waits on a prompt.
    secret_url = f"git+http://auditor:s3cret-token@127.0.0.1:9/audit.git#{BRANCH}"
    code, out = cli(a, org, "apply", "--env", "staging", "--auto-approve", "--journal", secret_url)
    assert code == 1 and "cannot fetch the journal" in out and "***@127.0.0.1" in out, out
    assert "s3cret-token" not in out
    assert snapshot(org) == before


def test_a_location_that_does_not_parse_is_refused(tmp_path: Path, org: Org) -> None:
    a = machine(tmp_path / "machine-a", org, "git+file:///srv/audit.git")
    code, out = cli(a, org, "apply", "--env", "staging", "--auto-approve")
    assert code == 1 and "expected git+URL#BRANCH" in out, out
    for bad in ("git+ftp://host/x.git#b", "git+https://host/x.git#-b", "git+https://host/x.git#a..b"):
        with pytest.raises(JournalError):
            GitLocation.parse(bad)
    assert redact("https://u:p@host/x and ssh://git@host/y") == "https://***@host/x and ssh://***@host/y"


# --- A rewritten branch --------------------------------------------------------------------------


@pytest.fixture
def applied_twice(tmp_path: Path, org: Org, bare: Path) -> Iterator[tuple[Path, Path]]:
    where = location(bare)
    a = machine(tmp_path / "machine-a", org, where, "First.")
    assert cli(a, org, "apply", "--env", "staging", "--auto-approve")[0] == 0
    b = machine(tmp_path / "machine-b", org, where, "Second.")
    assert cli(b, org, "apply", "--env", "staging", "--auto-approve")[0] == 0
    yield a, b


def test_a_force_push_to_an_older_commit_is_caught_where_it_was_verified(
    tmp_path: Path, org: Org, bare: Path, applied_twice: tuple[Path, Path]
) -> None:
    where = location(bare)
    c = tmp_path / "machine-c"
    c.mkdir()
    code, out = cli(c, None, "journal", "verify", "--journal", where, "--env", "staging")
    assert code == 0, out
    head = out.split("head ")[-1].strip()
    # Cut the last run off: the branch is set back to an older commit (a force-push).
    older = branch_commits(bare)[-3][0]
    git("--git-dir", str(bare), "update-ref", f"refs/heads/{BRANCH}", older)
    code, out = cli(c, None, "journal", "verify", "--journal", where, "--env", "staging")
    assert code == 1 and "the branch was rewritten" in out and "force-push" in out, out
    # A machine that never saw the branch finds a valid chain: the head printed by the run is
    # the anchor (and the branch protection that forbids force-pushes).
    d = tmp_path / "machine-d"
    d.mkdir()
    code, out = cli(d, None, "journal", "verify", "--journal", where, "--env", "staging")
    assert code == 0, out
    code, out = cli(
        d, None, "journal", "verify", "--journal", where, "--env", "staging", "--expect-head", head
    )
    assert code == 1 and "no longer reaches head" in out, out
    # The writer that pushed last refuses to write on the rewritten branch.
    before = snapshot(org)
    code, out = cli(applied_twice[1], org, "apply", "--env", "staging", "--auto-approve")
    assert code == 1 and "NOT intact" in out and "rewritten" in out, out
    assert snapshot(org) == before


def test_an_edited_history_is_reported_even_when_its_chain_was_made_again(
    tmp_path: Path, bare: Path, applied_twice: tuple[Path, Path]
) -> None:
    where = location(bare)
    c = tmp_path / "machine-c"
    c.mkdir()
    assert cli(c, None, "journal", "verify", "--journal", where, "--env", "staging")[0] == 0
    # A forger edits a published outcome, makes the whole chain again so it verifies, and pushes
    # it on top of the branch (no force needed).
    work = tmp_path / "forger"
    git("clone", "--quiet", "--branch", BRANCH, str(bare), str(work))
    lines = (work / "staging.jsonl").read_text().splitlines()
    edited = []
    for line in lines:
        record = json.loads(line)
        if record["type"] == "outcome":
            record["data"]["status"] = "failed"
        edited.append(json.dumps(record))
    (work / "staging.jsonl").write_text("\n".join(rechain(edited)) + "\n")
    assert verify(work / "staging.jsonl").ok  # the chain alone cannot tell
    git("commit", "--quiet", "-am", "tidy up", cwd=work)
    git("push", "--quiet", "origin", BRANCH, cwd=work)
    for verifier in (c, tmp_path / "machine-d"):
        verifier.mkdir(exist_ok=True)
        code, out = cli(verifier, None, "journal", "verify", "--journal", where, "--env", "staging")
        assert code == 1 and "published lines were edited" in out, out

    # The same edit force-pushed as a fresh history: caught by the machine that verified before.
    git("checkout", "--quiet", "--orphan", "forged", cwd=work)
    git("commit", "--quiet", "-m", "journal", cwd=work)
    git("push", "--quiet", "--force", "origin", f"forged:{BRANCH}", cwd=work)
    code, out = cli(c, None, "journal", "verify", "--journal", where, "--env", "staging")
    assert code == 1 and "the branch was rewritten" in out, out


# --- Publishing while a run goes on --------------------------------------------------------------


def test_records_are_pushed_in_batches_and_a_failed_push_is_retried(tmp_path: Path, bare: Path) -> None:
    store = GitStore.at(location(bare), environment="staging", cache_root=tmp_path / "cache")
    store.batch_delay_s = 0.2
    writer = store.writer(actor="ci", command="apply", environment="staging")
    journal = writer.__enter__()
    journal.append("run-1", RecordType.RUN_START, {"actor": "ci", "command": "apply"})
    deadline = time.monotonic() + 10
    while "run-1" not in branch_file(bare) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "run-1" in branch_file(bare)  # pushed while the run goes on, not only at its end

    # The remote goes away for a moment: the push is retried with backoff, and lands.
    hidden = bare.with_name("hidden.git")
    bare.rename(hidden)
    journal.append("run-1", RecordType.RUN_END, {"summary": {}})
    time.sleep(0.6)
    hidden.rename(bare)
    writer.__exit__(None, None, None)
    published = journal_of(bare, tmp_path)
    assert [r.type for r in published.records()][-2:] == [RecordType.RUN_END, RecordType.RELEASE]
    assert all(len(commit) <= 2 for commit in branch_commits(bare))


def test_a_lease_silent_longer_than_its_time_is_taken_over_and_journaled(tmp_path: Path, bare: Path) -> None:
    where = location(bare)
    dead = GitStore.at(where, environment="staging", cache_root=tmp_path / "dead").writer(
        actor="gone", command="apply", environment="staging"
    )
    dead.__enter__()  # and never heard of again
    later = GitStore.at(where, environment="staging", cache_root=tmp_path / "later")
    notes: list[str] = []
    with pytest.raises(JournalError, match="in use by run"):
        later.writer(actor="ci", command="apply", environment="staging").__enter__()
    later.lease_s = 0
    with later.writer(actor="ci", command="apply", environment="staging", say=notes.append) as journal:
        claim = list(journal.records())[-1]
    assert claim.type is RecordType.CLAIM and claim.data["broke"]["actor"] == "gone"
    assert claim.data["broke"]["reason"].startswith("expired") and "Took over" in notes[0]
    assert current_lease(journal_of(bare, tmp_path).records()) is None


def test_writers_claiming_at_the_same_moment_take_turns_on_one_linear_chain(
    tmp_path: Path, bare: Path
) -> None:
    """Four machines claim at once (threads, each with its own working copy): the push is the
    compare-and-swap, so each gets the lease in turn and the branch never forks."""
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def one_machine(number: int) -> None:
        store = GitStore.at(location(bare), environment="staging", cache_root=tmp_path / f"m{number}")
        try:
            start.wait()
            with store.writer(actor=f"m{number}", command="apply", environment="staging", timeout=60) as j:
                run_id = j.start_run(
                    actor=f"m{number}", environment="staging", plan_hash="", git_commit=None, command="apply"
                )
                j.append(run_id, RecordType.RUN_END, {"summary": {}})
        except BaseException as exc:  # reported below, with the thread's machine
            failures.append(exc)

    threads = [threading.Thread(target=one_machine, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    journal = journal_of(bare, tmp_path)
    kinds = [r.type for r in journal.records()]
    one_turn = [RecordType.CLAIM, RecordType.RUN_START, RecordType.RUN_END, RecordType.RELEASE]
    assert kinds == one_turn * 4
    assert sorted(r.actor for r in journal.runs()) == ["m0", "m1", "m2", "m3"]
    assert all(len(commit) <= 2 for commit in branch_commits(bare))
