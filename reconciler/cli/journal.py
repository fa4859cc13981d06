"""`reconciler journal`: list runs, show one, and verify the hash chain.

The journal is read where apply writes it (--journal, RECONCILER_JOURNAL, else reconciler.yaml's
``journal:`` when there is one): a local file, or a git branch (``git+URL#BRANCH``, the file of
the environment given by --env), so any machine given the location can read and verify it.
Reading changes nothing anyone else sees.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import click

from reconciler.cli import main
from reconciler.cli.options import env_option, format_option, journal_option, note
from reconciler.client.connect import chosen_environment
from reconciler.errors import JournalError
from reconciler.journal import Journal, JournalStore, LocalStore, is_git_location
from reconciler.journal_git import open_store
from reconciler.loader import load_project
from reconciler.workspace import journal_cache_dir, journal_location

DEFAULT_JOURNAL = ".reconciler/journal.jsonl"


def _store(location: str | None, env_name: str | None) -> JournalStore:
    """The journal's store: the location given, else reconciler.yaml's (when in a project). A
    journal in git is one file per environment: reconciler.yaml, when there is one, says which
    environment a command without --env works on."""
    if location and not is_git_location(location):
        return LocalStore(Path(location))
    project, found = load_project(None)
    if found is not None:
        name, env = chosen_environment(project, env_name, os.environ)
        location = journal_location(project, found.parent, env, location)
        cache = journal_cache_dir(found.parent, os.environ)
        return open_store(location, environment=name, cache_root=cache)
    name = env_name or os.environ.get("RECONCILER_ENV") or ""
    cache = journal_cache_dir(Path("."), os.environ)
    return open_store(location or DEFAULT_JOURNAL, environment=name, cache_root=cache)


def _open(location: str | None, env_name: str | None) -> Journal:
    """The journal for reading: nothing on disk changes (only apply and rollback set aside a torn
    tail); a tampered record is an error here as everywhere."""
    journal = _store(location, env_name).reader()
    if journal.skipped_tail:
        note(f"Warning: the journal's {journal.skipped_tail}; not read (the next apply sets it aside).")
    return journal


@main.group()
def journal() -> None:
    """The audit journal: every write, hash-chained (see `journal verify`)."""


@journal.command("list")
@journal_option
@env_option
@format_option("text", "json")
def list_runs(journal_path: str | None, env_name: str | None, output_format: str) -> None:
    """One line per run: id, start, environment, actor, command, outcome counts."""
    runs = _open(journal_path, env_name).runs()
    if output_format == "json":
        click.echo(json.dumps([dataclasses.asdict(r) for r in runs], indent=2, sort_keys=True))
        return
    for run in runs:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(run.counts.items())) or "no changes"
        state = "" if run.finished else " (unfinished)"
        click.echo(
            f"{run.run_id}  {run.started}  {run.environment or '-'}  {run.actor or '-'}  "
            f"{run.command}  {counts}{state}"
        )


@journal.command("show")
@click.argument("run_id")
@journal_option
@env_option
@format_option("text", "json")
def show(run_id: str, journal_path: str | None, env_name: str | None, output_format: str) -> None:
    """Every record of one run."""
    records = _open(journal_path, env_name).run(run_id)
    if not records:
        raise JournalError(f"no run {run_id!r} in the journal; see `reconciler journal list`")
    if output_format == "json":
        click.echo(json.dumps([{**r.body(), "hash": r.hash} for r in records], indent=2, sort_keys=True))
        return
    for r in records:
        data = r.data
        if r.type.value in ("intent", "outcome"):
            detail = f"{data.get('action')} {data.get('kind')}/{data.get('name')}"
            if r.type.value == "outcome":
                detail += f" -> {data.get('status')} ({data.get('http_status')}, {data.get('latency_ms')} ms)"
        else:
            detail = json.dumps(data, sort_keys=True)
        click.echo(f"{r.seq:>6}  {r.ts}  {r.type.value:<12} {detail}")


@journal.command("verify")
@journal_option
@env_option
@click.option("--expect-head", metavar="HASH", help="Fail unless the journal still reaches this head hash.")
def verify_command(journal_path: str | None, env_name: str | None, expect_head: str | None) -> None:
    """Check every record's hash and link. Exit 0 intact, 1 broken or cut off.

    A journal kept in git: also that the branch history is linear and every commit only appended
    lines, and that it still holds the commit this machine verified last (a force-push is caught).
    """
    store = _store(journal_path, env_name)
    where = store.describe()
    report = store.verify(expect_head)
    for line in report.details:
        note(f"  {line}")
    if not report.ok:
        click.echo(f"Journal {where} is NOT intact: {report.problem}", err=True)
        click.echo(
            f"Verified {report.records} record(s) before the problem; head there {report.head}", err=True
        )
        raise SystemExit(1)
    click.echo(f"Journal {where} intact: {report.records} record(s); head {report.head}")
