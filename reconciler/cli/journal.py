"""`reconciler journal`: list runs, show one, and verify the hash chain."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reconciler.cli import main
from reconciler.cli.options import format_option, journal_option, note
from reconciler.errors import JournalError
from reconciler.journal import Journal, verify

DEFAULT_JOURNAL = ".reconciler/journal.jsonl"


def _open(path: str | None) -> Journal:
    """The journal for reading: nothing on disk changes (only apply and rollback set aside a torn
    tail); a tampered record is an error here as everywhere."""
    journal = Journal(Path(path or DEFAULT_JOURNAL))
    if journal.skipped_tail:
        note(f"Warning: the journal's {journal.skipped_tail}; not read (the next apply sets it aside).")
    return journal


@main.group()
def journal() -> None:
    """The audit journal: every write, hash-chained (see `journal verify`)."""


@journal.command("list")
@journal_option
def list_runs(journal_path: str | None) -> None:
    """One line per run: id, start, environment, actor, command, outcome counts."""
    for run in _open(journal_path).runs():
        counts = ", ".join(f"{n} {status}" for status, n in sorted(run.counts.items())) or "no changes"
        state = "" if run.finished else " (unfinished)"
        click.echo(
            f"{run.run_id}  {run.started}  {run.environment or '-'}  {run.actor or '-'}  "
            f"{run.command}  {counts}{state}"
        )


@journal.command("show")
@click.argument("run_id")
@journal_option
@format_option("text", "json")
def show(run_id: str, journal_path: str | None, output_format: str) -> None:
    """Every record of one run."""
    records = _open(journal_path).run(run_id)
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
@click.option("--expect-head", metavar="HASH", help="Fail unless the journal still reaches this head hash.")
def verify_command(journal_path: str | None, expect_head: str | None) -> None:
    """Check every record's hash and link. Exit 0 intact, 1 broken or cut off."""
    path = Path(journal_path or DEFAULT_JOURNAL)
    report = verify(path, expect_head)
    if not report.ok:
        click.echo(f"Journal {path} is NOT intact: {report.problem}", err=True)
        click.echo(
            f"Verified {report.records} record(s) before the problem; head there {report.head}", err=True
        )
        raise SystemExit(1)
    click.echo(f"Journal {path} intact: {report.records} record(s); head {report.head}")
