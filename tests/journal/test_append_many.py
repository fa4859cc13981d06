"""``Journal.append_many``: records appended together are chained in order and made durable by one
write and one fsync; a failed one leaves the journal as it was, and the chain goes on."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from reconciler.errors import JournalError
from reconciler.journal import Journal, JournalRecord, RecordType, verify


class Recorder:
    """A publisher that remembers what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def ready(self) -> None:
        self.calls.append("ready")

    def appended(self, record: JournalRecord) -> None:
        self.calls.append(f"appended {record.seq}")


def intents(run_id: str, n: int) -> list[tuple[str, RecordType, dict[str, object]]]:
    return [(run_id, RecordType.INTENT, {"change_id": i, "name": f"p{i}"}) for i in range(n)]


def count_fsyncs(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        if fail:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_records_appended_together_share_one_fsync_and_chain_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path, writable=True, publisher=Recorder())
    first = journal.append("r", RecordType.RUN_START, {"command": "apply"})
    fsyncs = count_fsyncs(monkeypatch)
    records = journal.append_many(intents("r", 5))
    assert len(fsyncs) == 1
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert [r.prev for r in records] == [first.hash] + [r.hash for r in records[:-1]]
    assert [r.data["change_id"] for r in records] == [0, 1, 2, 3, 4]
    assert journal.head == records[-1].hash
    assert journal.append_many([]) == [] and len(fsyncs) == 1
    assert isinstance(journal.publisher, Recorder)
    # ready once for the batch, then each record announced in order once it is durable
    batch = ["ready", *(f"appended {i}" for i in range(1, 6))]
    assert journal.publisher.calls == ["ready", "appended 0", *batch]
    report = verify(path, expect_head=journal.head)
    assert report.ok and report.records == 6
    assert Journal(path, writable=True).head == journal.head  # reopens at the same head


def test_a_failed_batch_leaves_none_of_its_records_and_the_chain_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path, writable=True, publisher=Recorder())
    journal.append("r", RecordType.RUN_START, {})
    before, head = path.read_bytes(), journal.head
    with monkeypatch.context() as patch:
        count_fsyncs(patch, fail=True)  # written, but not durable: it must be cut off again
        with pytest.raises(JournalError, match="cannot write the audit journal"):
            journal.append_many(intents("r", 3))
    assert path.read_bytes() == before and journal.head == head
    assert isinstance(journal.publisher, Recorder)
    assert journal.publisher.calls == ["ready", "appended 0", "ready"]  # nothing announced
    again = journal.append_many(intents("r", 2))
    assert [r.seq for r in again] == [1, 2] and again[0].prev == head
    assert verify(path, expect_head=journal.head).ok
