"""The audit journal: chain, tamper detection, torn tails set aside, cut-off tails caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.errors import JournalError
from reconciler.journal import Journal, RecordType, summarize, verify


def filled(path: Path, runs: int = 2, per_run: int = 3) -> Journal:
    journal = Journal(path, writable=True)
    for _ in range(runs):
        run_id = journal.start_run(
            actor="ci", environment="prod", plan_hash="abc", git_commit=None, command="apply"
        )
        for i in range(per_run):
            journal.append(
                run_id,
                RecordType.INTENT,
                {"change_id": i, "action": "update", "kind": "Prompt", "name": f"p{i}"},
            )
            journal.append(
                run_id,
                RecordType.OUTCOME,
                {
                    "change_id": i,
                    "action": "update",
                    "kind": "Prompt",
                    "name": f"p{i}",
                    "status": "applied",
                    "latency_ms": 10 + i,
                },
            )
        journal.append(run_id, RecordType.RUN_END, {"summary": summarize([10, 11, 12], ["applied"] * 3)})
    return journal


def test_chain_verifies_and_reopens_at_its_head(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = filled(path)
    report = verify(path)
    assert report.ok and report.records == 2 * (1 + 3 * 2 + 1) and report.head == journal.head
    again = Journal(path, writable=True)
    assert again.head == journal.head and again.set_aside == []
    runs = again.runs()
    assert len(runs) == 2 and runs[0].counts == {"applied": 3} and runs[0].finished


def test_an_edited_record_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    filled(path)
    lines = path.read_text().splitlines()
    record = json.loads(lines[3])
    record["data"]["status"] = "failed"
    lines[3] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    report = verify(path)
    assert not report.ok and report.line == 4 and "edited" in report.problem
    with pytest.raises(JournalError):
        Journal(path, writable=True)  # a broken middle is never silently accepted
    result = CliRunner().invoke(main, ["journal", "verify", "--journal", str(path)])
    assert result.exit_code == 1 and "NOT intact" in result.output


def test_a_removed_record_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    filled(path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    report = verify(path)
    assert not report.ok and report.line == 6 and "removed" in report.problem


def test_a_torn_tail_is_set_aside_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = filled(path, runs=1)
    head = journal.head
    with path.open("a") as handle:
        handle.write('{"seq": 9, "ts": "2026-11-2')  # the writer died mid-line
    reopened = Journal(path, writable=True)
    assert len(reopened.set_aside) == 1 and reopened.head == head
    side = reopened.set_aside[0].side_file
    assert side.exists() and side.read_text().startswith('{"seq": 9')
    assert verify(path).ok
    reopened.append("r", RecordType.RUN_END, {})  # and the chain goes on from the good head
    assert verify(path).ok


def test_a_cut_off_tail_is_caught_only_with_the_expected_head(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = filled(path)
    head = journal.head
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-4]) + "\n")
    assert verify(path).ok  # the chain alone cannot see it
    report = verify(path, expect_head=head)
    assert not report.ok and "no longer reaches" in report.problem
    result = CliRunner().invoke(main, ["journal", "verify", "--journal", str(path), "--expect-head", head])
    assert result.exit_code == 1


def test_show_and_list_commands(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    filled(path, runs=1)
    listed = CliRunner().invoke(main, ["journal", "list", "--journal", str(path)])
    run_id = listed.output.split()[0]
    shown = CliRunner().invoke(main, ["journal", "show", run_id, "--journal", str(path), "--format", "json"])
    records = json.loads(shown.output)
    assert [r["type"] for r in records][:2] == ["run_start", "intent"] and records[-1]["type"] == "run_end"
    missing = CliRunner().invoke(main, ["journal", "show", "nope", "--journal", str(path)])
    assert missing.exit_code == 1 and "no run" in missing.output


def test_summary_percentiles() -> None:
    summary = summarize([float(i) for i in range(1, 101)], ["applied"] * 99 + ["conflict"])
    assert summary["p50_ms"] == 50.0 or summary["p50_ms"] == 51.0
    assert summary["p95_ms"] >= 95 and summary["success_rate"] == 0.99


def test_unfinished_intents_are_found_when_opened_and_kept_up_to_date_by_appends(tmp_path: Path) -> None:
    """Opening a journal already reads every record (to verify the chain): it notes the intents
    without an outcome then, rather than reading the whole history a second time. Intents and
    outcomes appended afterwards keep that up to date; so a lost outcome in someone else's
    journal (a change id of any JSON shape) is found and not a crash."""
    path = tmp_path / "journal.jsonl"
    first = Journal(path, writable=True)
    first.append("run-1", RecordType.INTENT, {"change_id": 0, "name": "a"})
    first.append("run-1", RecordType.OUTCOME, {"change_id": 0, "status": "applied"})
    first.append("run-1", RecordType.INTENT, {"change_id": 1, "name": "b"})  # its outcome was lost
    first.append("run-1", RecordType.INTENT, {"change_id": ["odd", {"x": 1}], "name": "c"})
    assert [r.data["name"] for r in first.unfinished_intents()] == ["b", "c"]

    reopened = Journal(path, writable=True)
    assert [r.data["name"] for r in reopened.unfinished_intents()] == ["b", "c"]
    reopened.append("run-1", RecordType.OUTCOME, {"change_id": 1, "status": "unknown"})
    reopened.append("run-2", RecordType.INTENT, {"change_id": 1, "name": "d"})
    assert [r.data["name"] for r in reopened.unfinished_intents()] == ["c", "d"]
    assert [r.data["name"] for r in Journal(path).unfinished_intents()] == ["c", "d"]
