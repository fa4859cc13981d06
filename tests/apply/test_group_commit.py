"""Group commit: the journal records of changes running in parallel share writes and fsyncs, and
the promise holds: a write is sent only once its intent is durable, each change's intent comes
before its outcome, a failed journal write stops the writes, and the journal always verifies.

Every test applies over real HTTP to an emulator with 20 ms of latency, as users do (the CLI, in
process), and watches ``os.fsync`` on the journal file."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.apply import _GroupCommit
from reconciler.cli import main
from reconciler.client.api import GatewayClient
from reconciler.emulator.config import EmulatorConfig, Faults
from reconciler.emulator.server import running_emulator
from reconciler.errors import JournalError
from reconciler.journal import Journal, RecordType, verify
from reconciler.models import Kind
from tests.conftest import Org, function_manifest

N = 40  # changes, applied 10 at a time
JOURNAL = Path(".reconciler") / "journal.jsonl"


@pytest.fixture
def slow_org() -> Iterator[Org]:
    config = EmulatorConfig(rate_limit_per_minute=1_000_000, faults=Faults(latency_ms=20))
    with running_emulator(config) as url:
        yield Org(url)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "manifests").mkdir()
    text = "---\n".join(function_manifest(f"func-{i:02d}") for i in range(N))
    (tmp_path / "manifests" / "all.yaml").write_text(text)
    (tmp_path / "reconciler.yaml").write_text("project: group-commit\nmanifests: [manifests]\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


class JournalDisk:
    """Watches the fsyncs of one journal file: counts them, knows how many of its bytes are
    durable, and can fail the ``fail_at``-th as a full disk would, after its write landed (so the
    batch written must be cut off again). Other files' fsyncs pass through untouched."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int = 0) -> None:
        self.path, self.fail_at = path, fail_at
        self.fsyncs, self.durable = 0, 0
        self.lost = b""  # what the failed fsync would have made durable
        real = os.fsync

        def fsync(fd: int) -> None:
            if not self._is_journal(fd):
                real(fd)
                return
            self.fsyncs += 1
            if self.fsyncs == self.fail_at:
                self.lost = self.path.read_bytes()[self.durable :]
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)
            self.durable = os.fstat(fd).st_size

        monkeypatch.setattr(os, "fsync", fsync)

    def _is_journal(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except OSError:
            return False

    def durable_records(self) -> list[dict[str, Any]]:
        durable = self.path.read_bytes()[: self.durable]
        return [json.loads(line) for line in durable.splitlines()]


def watch_puts(monkeypatch: pytest.MonkeyPatch, disk: JournalDisk) -> list[tuple[str, bool]]:
    """Every PUT the engine sends, as it is sent: the resource id, and whether the journal held
    its intent durable at that moment."""
    sent: list[tuple[str, bool]] = []
    real_put = GatewayClient.put

    async def put(self: GatewayClient, kind: Kind, live_id: str, body: dict[str, Any], **kw: Any) -> Any:
        intents = [r for r in disk.durable_records() if r["type"] == RecordType.INTENT.value]
        sent.append((live_id, any(r["data"]["path"].endswith(f"/{live_id}") for r in intents)))
        return await real_put(self, kind, live_id, body, **kw)

    monkeypatch.setattr(GatewayClient, "put", put)
    return sent


def apply(org: Org) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(main, ["apply", "--auto-approve", "--format", "json"], env=org.environ())
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout), result.output


def test_parallel_changes_share_fsyncs_and_each_write_waits_for_its_intent(
    slow_org: Org, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = JournalDisk(project / JOURNAL, monkeypatch)
    sent = watch_puts(monkeypatch, disk)
    code, result, output = apply(slow_org)
    assert code == 0, output
    assert [c["status"] for c in result["changes"]] == ["applied"] * N

    records = list(Journal(project / JOURNAL).records())
    assert len(records) == 1 + 2 * N + 1  # run start, an intent and an outcome each, run end
    assert verify(project / JOURNAL, expect_head=result["journal_head"]).ok
    # Records that arrive together share an fsync: far fewer fsyncs than records (one each before).
    assert disk.fsyncs <= len(records) // 2, (disk.fsyncs, len(records))
    # ... and still: every write was sent after its intent was durable, never before,
    assert len(sent) == N and all(durable for _, durable in sent), sent
    # and each change's intent precedes its outcome in the one chain.
    position = {(r.type, r.data.get("change_id")): i for i, r in enumerate(records)}
    for change_id in range(N):
        assert position[RecordType.INTENT, change_id] < position[RecordType.OUTCOME, change_id]


def test_a_failed_batch_fails_its_changes_sends_nothing_more_and_leaves_a_verifiable_journal(
    slow_org: Org, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsync 1 is the run start, 2 the first intents (their writes are sent); 3 fails.
    disk = JournalDisk(project / JOURNAL, monkeypatch, fail_at=3)
    sent = watch_puts(monkeypatch, disk)
    code, result, output = apply(slow_org)
    assert code == 1, output
    assert "cannot write the audit journal" in output and "No space left" in result["journal_failure"]

    # The failed batch was cut off and nothing was written after it: the journal is exactly what
    # was durable, and verifies.
    path = project / JOURNAL
    assert disk.lost and disk.fsyncs == 3 and path.stat().st_size == disk.durable
    assert verify(path, expect_head=result["journal_head"]).ok
    # Every change with a record in the failed batch failed, saying why.
    lost = [json.loads(line) for line in disk.lost.splitlines()]
    by_name = {c["name"]: c for c in result["changes"]}
    for record in lost:
        change = by_name[record["data"]["name"]]
        assert change["status"] == "failed", change
        assert change["message"].startswith("journal: cannot write the audit journal"), change
    # Writes were sent only with their intent durable; none after the failure: what was sent is
    # exactly the intents the journal holds, and the changes not sent failed on the journal.
    intents = {r.data["name"] for r in Journal(path).records() if r.type is RecordType.INTENT}
    assert all(durable for _, durable in sent), sent
    assert {live_id for live_id, _ in sent} == intents and 0 < len(intents) < N
    for change in result["changes"]:
        if change["name"] not in intents:
            assert change["status"] == "failed" and "journal" in change["message"], change

    # The next run records what became of the writes whose outcome was lost, and finishes.
    disk.fail_at = 0
    code, result, output = apply(slow_org)
    assert code == 0, output
    assert verify(path, expect_head=result["journal_head"]).ok
    assert Journal(path).unfinished_intents() == []


def test_cancellation_leaves_no_waiter_hanging_and_no_batch_half_written(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path, writable=True)
    gate, real_append_many = threading.Event(), journal.append_many

    def held_append_many(entries: Any) -> Any:  # a flush that takes as long as the test says
        gate.wait(10)
        return real_append_many(entries)

    journal.append_many = held_append_many  # type: ignore[method-assign]

    def intent(i: int) -> Any:
        return asyncio.ensure_future(commits.append(RecordType.INTENT, {"change_id": i}))

    async def scenario() -> None:
        # A change cancelled while its batch is being flushed: the others of its batch, and the
        # records queued behind, are still made durable and their changes told.
        a, b = intent(0), intent(1)
        await asyncio.sleep(0.05)  # both are in the flush under way, held in its thread
        a.cancel()
        c = intent(2)
        gate.set()
        await asyncio.wait_for(asyncio.gather(b, c), 10)
        assert a.cancelled()
        await commits.close()
        assert len(list(Journal(path).records())) == 3
        # The flusher itself cancelled mid-flush (the loop shutting down): its waiters are told
        # the journal failed, never left hanging, and nothing more is written.
        gate.clear()
        d = intent(3)
        await asyncio.sleep(0.05)
        assert commits._flusher is not None
        commits._flusher.cancel()
        with pytest.raises(JournalError, match="cancelled"):
            await asyncio.wait_for(d, 10)
        with pytest.raises(JournalError, match="cancelled"):
            await commits.append(RecordType.INTENT, {"change_id": 4})
        gate.set()

    commits = _GroupCommit(journal, "r")
    asyncio.run(scenario())  # which waits for the flush thread to finish
    # That flush could not be stopped: its record was written whole, and the head moved with it.
    records = list(Journal(path).records())
    assert [r.data["change_id"] for r in records] == [0, 1, 2, 3]
    assert journal.head == records[-1].hash and verify(path, expect_head=journal.head).ok


def test_a_slot_is_free_again_while_the_outcome_is_made_durable(
    slow_org: Org, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One write at a time: the next change's intent joins the batch of this change's outcome,
    # instead of waiting for that batch's fsync before it is even queued.
    disk = JournalDisk(project / JOURNAL, monkeypatch)
    sent = watch_puts(monkeypatch, disk)
    args = ["apply", "--auto-approve", "--format", "json", "--parallelism", "1"]
    result = CliRunner().invoke(main, args, env=slow_org.environ())
    assert result.exit_code == 0, result.output
    changes = json.loads(result.stdout)["changes"]
    assert [c["status"] for c in changes] == ["applied"] * N
    records = list(Journal(project / JOURNAL).records())
    assert len(records) == 2 * N + 2
    assert disk.fsyncs <= N + 3, disk.fsyncs  # 2 N + 2 while the slot was held until then
    assert len(sent) == N and all(durable for _, durable in sent), sent
