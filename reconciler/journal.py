"""The audit journal: append-only JSON Lines, each record chained to the one before by SHA-256.

Every record is one line ``{"seq", "ts", "run_id", "type", "data", "prev", "hash"}`` where
``hash`` is the SHA-256 of the canonical JSON of the record without ``hash``, and ``prev`` the
previous record's hash (64 zeros for the first). A line is written whole and fsync'd before the
write it describes is sent, so a crash leaves at most one torn last line: one without its final
newline, or one that does not parse. Opening the journal for writing moves it to a side file
``<name>.torn-<timestamp>`` and reports it: never silently dropped, never accepted. Opening it
for reading (``journal list``/``show``, rollback's lookup) changes nothing and only skips it. A
complete record that parses but whose hash or link is wrong is tampering, never a torn write:
every command refuses such a journal.

Records that arrive together (changes applied in parallel) share one write and one fsync
(``append_many``: group commit, as databases do), so the journal does not serialize the writes it
records; each record is still durable before the write it announces is sent.

One writer at a time: a writing command holds ``JournalLock`` (an OS file lock beside the
journal, released by the OS if the process dies) for its whole run, so appends always extend the
head they read, and a second writer waits a bounded time or is told who holds the journal.
A write to the journal that fails (disk full, I/O error, read-only file system) raises
``JournalError``; the apply engine then sends no further writes to the org, and the next run
finds the intents left without an outcome (``unfinished_intents``) and records what it finds.

A hash chain cannot see a cut-off tail by itself, so every run prints its final head hash and
``verify(expect_head=...)`` fails when the journal no longer reaches that head.

Storage is a seam (``JournalStore``): this module keeps records and chains, and the local file
store; ``reconciler.journal_git`` keeps a journal on a git branch shared by many machines, where
the one-writer lock is a lease written into the journal itself (``claim``/``release`` records,
see ``current_lease``) and published records are pushed by compare-and-swap.
``journal_git.open_store`` chooses between them from a location: a path, or ``git+URL#BRANCH``.

Record data, by type:
  run_start     {actor, git_commit, plan_hash, environment, command}
  intent        {change_id, action, kind, name, method, path, etag_before, body}
  outcome       {change_id, action, kind, name, status, http_status, latency_ms, etag_before,
                 etag_after, live_id, before, after, error, service_changed}
  notification  {url, event, delivered, http_status, attempts, error}
  run_end       {summary: {counts, p50_ms, p95_ms, success_rate}}
  claim         {actor, command, environment, host, pid, cache, lease_s, broke}: a git journal's
                writer takes the lease (``broke``: the lease it took over with --break-lock)
  release       {}: the writer that claimed (same run_id) gives the lease back
Bodies are redacted by the caller before they reach the journal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import filelock

from reconciler.errors import JournalError

GENESIS = "0" * 64


class RecordType(StrEnum):
    RUN_START = "run_start"
    INTENT = "intent"
    OUTCOME = "outcome"
    NOTIFICATION = "notification"
    RUN_END = "run_end"
    # {verdict, duration_s, window, baseline_window, prompts: [per prompt and variant: the numbers,
    #  the limits and which breached], action}: written by `apply --health-gate` after the run.
    HEALTH_VERDICT = "health_verdict"
    # The lease of a shared (git) journal: who writes it now. Not runs: `journal list` shows a
    # claim only when it took over another run's lease.
    CLAIM = "claim"
    RELEASE = "release"


@dataclass(frozen=True)
class JournalRecord:
    seq: int
    ts: str
    run_id: str
    type: RecordType
    data: dict[str, Any]
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "run_id": self.run_id,
            "type": self.type.value,
            "data": self.data,
            "prev": self.prev,
        }


@dataclass(frozen=True)
class TornTail:
    side_file: Path
    size: int
    reason: str

    def __str__(self) -> str:
        return f"{self.size} bytes moved to {self.side_file}: {self.reason}"


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    started: str
    environment: str
    actor: str
    command: str
    counts: dict[str, int]
    finished: bool


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records: int
    head: str
    problem: str = ""
    line: int = 0
    details: tuple[str, ...] = ()  # what else was checked (a git journal: its branch history)


@dataclass(frozen=True)
class Lease:
    """Who holds a shared journal: the last claim not released (or, in a journal written without
    claims, the last run started and not ended). ``last`` is the time of the journal's last record,
    every one of which its holder wrote: a lease is alive while its holder keeps writing."""

    claim_id: str
    actor: str
    command: str
    since: str
    last: str
    host: str = ""
    cache: str = ""
    runs: tuple[str, ...] = ()

    @property
    def run(self) -> str:
        """The run to name to others: the latest run started under the lease, else the claim."""
        return self.runs[-1] if self.runs else self.claim_id

    def age(self, now: datetime) -> float:
        try:
            return (now - datetime.fromisoformat(self.last)).total_seconds()
        except ValueError:
            return float("inf")

    def names(self, run_id: str) -> bool:
        return run_id == self.claim_id or run_id in self.runs

    def __str__(self) -> str:
        return (
            f"run {self.run} ({self.command}) of {self.actor}, started {self.since}"
            f"{f' on {self.host}' if self.host else ''}, last written {self.last}"
        )


def current_lease(records: Iterable[JournalRecord]) -> Lease | None:
    """The lease the journal's records say is held, whatever its age (pure)."""
    held: Lease | None = None
    claimed = False
    last = ""
    for record in records:
        last = record.ts
        data = record.data
        if record.type is RecordType.CLAIM:
            held, claimed = (
                Lease(
                    record.run_id,
                    str(data.get("actor") or ""),
                    str(data.get("command") or ""),
                    record.ts,
                    record.ts,
                    str(data.get("host") or ""),
                    str(data.get("cache") or ""),
                ),
                True,
            )
        elif record.type is RecordType.RELEASE and held is not None and held.claim_id == record.run_id:
            held, claimed = None, False
        elif record.type is RecordType.RUN_START:
            if held is not None and claimed:
                held = replace(held, runs=(*held.runs, record.run_id))
            else:
                actor, command = str(data.get("actor") or ""), str(data.get("command") or "")
                held = Lease(record.run_id, actor, command, record.ts, record.ts, runs=(record.run_id,))
        elif (
            record.type is RecordType.RUN_END
            and held is not None
            and not claimed
            and held.claim_id == record.run_id
        ):
            held = None
    return replace(held, last=last) if held is not None else None


def _digest(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _parse(line: str) -> JournalRecord:
    raw = json.loads(line)
    record = JournalRecord(
        int(raw["seq"]),
        str(raw["ts"]),
        str(raw["run_id"]),
        RecordType(raw["type"]),
        dict(raw["data"]),
        str(raw["prev"]),
        str(raw["hash"]),
    )
    return record


def _change_of(record: JournalRecord) -> tuple[str, str]:
    """Which change of which run an intent or outcome is about. The change id is written as
    JSON: whatever shape a journal someone else wrote gives it, it can be looked up."""
    return record.run_id, json.dumps(record.data.get("change_id"), sort_keys=True, default=str)


def _check(record: JournalRecord, prev: str, seq: int) -> str:
    """Why ``record`` does not belong after ``prev`` at position ``seq`` ('' when it does)."""
    if record.prev != prev:
        return "its prev hash does not match the record before it (a record was removed or reordered)"
    if record.seq != seq:
        return f"sequence {record.seq} where {seq} was expected"
    if _digest(record.body()) != record.hash:
        return "its content does not match its hash (the record was edited)"
    return ""


def verify(path: Path, expect_head: str | None = None) -> VerifyReport:
    """Check the whole chain; with ``expect_head``, also that the journal still reaches it."""
    prev, count, seen_expected = GENESIS, 0, expect_head is None
    if not path.exists():
        return VerifyReport(
            expect_head is None, 0, GENESIS, "" if expect_head is None else f"{path} does not exist"
        )
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = _parse(line)
            except (ValueError, KeyError, TypeError) as exc:
                return VerifyReport(
                    False, count, prev, f"line {number} is not a journal record ({exc})", number
                )
            problem = _check(record, prev, count)
            if problem:
                return VerifyReport(False, count, prev, f"line {number}: {problem}", number)
            prev, count = record.hash, count + 1
            seen_expected = seen_expected or record.hash == expect_head
    if not seen_expected:
        return VerifyReport(
            False,
            count,
            prev,
            f"the journal no longer reaches head {expect_head} (records were cut off or replaced)",
        )
    return VerifyReport(True, count, prev)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 2)


def summarize(latencies_ms: Sequence[float], statuses: Sequence[str]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    done = len(statuses)
    good = counts.get("applied", 0) + counts.get("unchanged", 0)
    return {
        "counts": counts,
        "p50_ms": percentile(latencies_ms, 0.5),
        "p95_ms": percentile(latencies_ms, 0.95),
        "success_rate": round(good / done, 4) if done else 1.0,
    }


def _utc_now() -> datetime:
    return datetime.now(UTC)


class JournalLock:
    """The one-writer lock of a journal: held by apply and rollback for their whole run.

    An OS lock (``filelock``) on ``<journal>.lock``, so it is released when its holder dies; who
    holds it (pid, actor, command, since when, run id once known) is written beside it in
    ``<journal>.holder`` to be named to anyone who has to wait. ``timeout`` seconds at most are
    waited (0: do not wait).
    """

    def __init__(self, path: Path, *, actor: str, command: str, timeout: float = 0.0) -> None:
        self.path = Path(path)
        self.holder_file = self.path.with_name(self.path.name + ".holder")
        self.actor, self.command, self.timeout = actor, command, timeout
        self._lock = filelock.FileLock(str(self.path.with_name(self.path.name + ".lock")))

    def __enter__(self) -> JournalLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=self.timeout)
        except filelock.Timeout:
            raise JournalError(
                f"the journal {self.path} is in use by {self.holder()}; "
                "wait for that run to finish, or give --lock-timeout SECONDS to wait for it"
            ) from None
        self.note_holder(run_id=None)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()

    def note_holder(self, run_id: str | None) -> None:
        """Say who holds the lock (a best effort: the lock itself is what excludes others)."""
        since = datetime.now(UTC).isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "actor": self.actor, "command": self.command, "since": since}
        with contextlib.suppress(OSError):
            self.holder_file.write_text(json.dumps({**holder, "run_id": run_id}), encoding="utf-8")

    def holder(self) -> str:
        try:
            info = json.loads(self.holder_file.read_text(encoding="utf-8")[:4096])
            return (
                f"run {info.get('run_id') or '(starting)'} ({info.get('command')}) of "
                f"{info.get('actor')}, pid {info.get('pid')}, since {info.get('since')}"
            )
        except (OSError, ValueError, AttributeError):
            return "another run (its details could not be read)"


class Publisher(Protocol):
    """Where a journal's records go beyond its local file (the git store pushes them)."""

    def ready(self) -> None:
        """Raise ``JournalError`` when no further record can be published (before each append,
        once for the records appended together)."""

    def appended(self, record: JournalRecord) -> None:
        """A record is durable in the local file (called for each record after it is, in order,
        from any thread)."""


@dataclass
class Journal:
    """An open journal. With ``writable``, appends are allowed (serialized by a lock; the records
    of one ``append_many`` share one write and one fsync) and a torn last line is set aside;
    without it, opening changes nothing on disk."""

    path: Path
    clock: Callable[[], datetime] = _utc_now
    writable: bool = False
    publisher: Publisher | None = None
    set_aside: list[TornTail] = field(default_factory=list)
    skipped_tail: str = ""  # read-only: why the last line was not read (torn), if it was not
    _head: str = GENESIS
    _seq: int = 0
    _end: int = 0  # bytes of complete, verified records
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Intents with no outcome yet, by (run, change): noted while the chain is verified on opening
    # and kept up to date by appends, so finding them never reads the history a second time.
    _open_intents: dict[tuple[str, str], JournalRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.writable:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._recover()

    def _recover(self) -> None:
        """Find the chain's end. A torn last line (no final newline, or unparseable) is set aside
        when writable and skipped otherwise; a record that parses but does not verify is
        tampering, wherever it is, and so is any broken line before the last."""
        if not self.path.exists():
            return
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read the journal {self.path}: {exc.strerror or exc}") from None
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]  # tail is b"" when the file ends with a newline
        prev, seq, end = GENESIS, 0, 0
        torn = ""
        for number, raw in enumerate(complete, start=1):
            try:
                record: JournalRecord | None = _parse(raw.decode("utf-8"))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                record = None
                if number == len(complete) and not tail:
                    torn = f"last line is unreadable ({exc})"
                    break
                raise JournalError(
                    f"{self.path}: line {number} is not a journal record ({exc}); "
                    "run `reconciler journal verify`"
                ) from None
            assert record is not None
            problem = _check(record, prev, seq)
            if problem:
                raise JournalError(
                    f"{self.path}: line {number}: {problem}: the journal was tampered with or damaged; "
                    "run `reconciler journal verify`"
                )
            prev, seq, end = record.hash, seq + 1, end + len(raw) + 1
            self._note(record)
        else:
            if tail:
                torn = "last line has no end (the writer was interrupted)"
        if torn and self.writable:
            self._set_aside(data, end, torn)
        elif torn:
            self.skipped_tail = torn
        self._head, self._seq, self._end = prev, seq, end

    def _note(self, record: JournalRecord) -> None:
        """Keep ``_open_intents`` up to date with ``record``, a verified one."""
        if record.type is RecordType.INTENT:
            self._open_intents[_change_of(record)] = record
        elif record.type is RecordType.OUTCOME:
            self._open_intents.pop(_change_of(record), None)

    def _set_aside(self, data: bytes, keep: int, reason: str) -> None:
        stamp = self.clock().strftime("%Y%m%dT%H%M%S%fZ")
        side = self.path.with_name(f"{self.path.name}.torn-{stamp}")
        try:
            side.write_bytes(data[keep:])
            with self.path.open("r+b") as handle:
                handle.truncate(keep)
                os.fsync(handle.fileno())
        except OSError as exc:
            why = exc.strerror or exc
            raise JournalError(f"cannot set aside the torn end of {self.path}: {why}") from None
        self.set_aside.append(TornTail(side, len(data) - keep, reason))

    @property
    def head(self) -> str:
        return self._head

    def new_run_id(self) -> str:
        return self.clock().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)

    def snapshot(self) -> tuple[bytes, str, int]:
        """The bytes of every complete record, with the head hash and record count they end at."""
        with self._lock:
            if not self.path.exists():
                return b"", self._head, self._seq
            with self.path.open("rb") as handle:
                return handle.read(self._end), self._head, self._seq

    def start_run(
        self, *, actor: str, environment: str, plan_hash: str, git_commit: str | None, command: str
    ) -> str:
        run_id = self.new_run_id()
        self.append(
            run_id,
            RecordType.RUN_START,
            {
                "actor": actor,
                "git_commit": git_commit,
                "plan_hash": plan_hash,
                "environment": environment,
                "command": command,
            },
        )
        return run_id

    def append(self, run_id: str, type: RecordType, data: Mapping[str, Any]) -> JournalRecord:
        return self.append_many([(run_id, type, data)])[0]

    def append_many(
        self, entries: Sequence[tuple[str, RecordType, Mapping[str, Any]]]
    ) -> list[JournalRecord]:
        """Chain ``entries`` (run id, type, data) in order and make them durable together: one
        write and one fsync for all (group commit). Returns once they are durable; on failure
        none of them is in the journal (a partial write is cut off) and ``JournalError`` says why.
        The head moves only after the fsync, all at once: never to a record that is not durable."""
        if not self.writable:
            raise JournalError(f"{self.path} was opened for reading; only apply and rollback write to it")
        if not entries:
            return []
        if self.publisher is not None:
            self.publisher.ready()
        with self._lock:
            records: list[JournalRecord] = []
            lines: list[str] = []
            head, seq = self._head, self._seq
            for run_id, type, data in entries:
                body = {
                    "seq": seq,
                    "ts": self.clock().isoformat(timespec="milliseconds"),
                    "run_id": run_id,
                    "type": type.value,
                    "data": dict(data),
                    "prev": head,
                }
                # Round-trip through JSON so the hash covers exactly what a reader will parse.
                body = json.loads(json.dumps(body, default=str))
                record = JournalRecord(
                    body["seq"], body["ts"], run_id, type, body["data"], body["prev"], _digest(body)
                )
                line = json.dumps(
                    {**body, "hash": record.hash}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
                )
                records.append(record)
                lines.append(line + "\n")
                head, seq = record.hash, seq + 1
            encoded = "".join(lines).encode()
            try:
                with self.path.open("ab") as handle:
                    handle.write(encoded)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                # A short write leaves part of a batch: cut it off (truncating needs no space). If
                # even that fails, the next writer sets the torn tail aside.
                with contextlib.suppress(OSError), self.path.open("r+b") as handle:
                    handle.truncate(self._end)
                raise JournalError(
                    f"cannot write the audit journal {self.path}: {exc.strerror or exc}; "
                    "no further change is sent to the org (no audit, no write)"
                ) from None
            self._head, self._seq, self._end = head, seq, self._end + len(encoded)
            for record in records:
                self._note(record)
        if self.publisher is not None:
            for record in records:
                self.publisher.appended(record)
        return records

    def records(self) -> Iterator[JournalRecord]:
        """The verified records (a skipped torn tail is not among them)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            data = handle.read(self._end)
        for line in data.split(b"\n"):
            if line.strip():
                yield _parse(line.decode("utf-8"))

    def unfinished_intents(self) -> list[JournalRecord]:
        """Intents with no outcome: writes that may have been sent while the journal could not
        record what came of them (a crash, a full disk). The next writer records what it finds."""
        with self._lock:
            return list(self._open_intents.values())

    def applied_plan(self, plan_hash: str) -> str | None:
        """The run that already applied the saved plan with this hash, if one finished."""
        started = {
            r.run_id
            for r in self.records()
            if r.type is RecordType.RUN_START and plan_hash and r.data.get("plan_hash") == plan_hash
        }
        ended = [r.run_id for r in self.records() if r.type is RecordType.RUN_END and r.run_id in started]
        return ended[0] if ended else None

    def run(self, run_id: str) -> list[JournalRecord]:
        return [r for r in self.records() if r.run_id == run_id]

    def runs(self) -> list[RunSummary]:
        found: dict[str, dict[str, Any]] = {}
        for record in self.records():
            if record.type is RecordType.RELEASE:
                continue
            if record.type is RecordType.CLAIM and not record.data.get("broke"):
                continue  # a lease is not a run; one that took over a dead run's lease is shown
            entry = found.setdefault(
                record.run_id,
                {
                    "started": record.ts,
                    "environment": "",
                    "actor": "",
                    "command": "",
                    "counts": {},
                    "finished": False,
                },
            )
            if record.type is RecordType.CLAIM:
                broke = record.data.get("broke") or {}
                entry.update(
                    environment=record.data.get("environment") or "",
                    actor=record.data.get("actor") or "",
                    command=f"break-lock: took over the lease of run {broke.get('run_id')}",
                    finished=True,
                )
            elif record.type is RecordType.RUN_START:
                entry.update(
                    environment=record.data.get("environment") or "",
                    actor=record.data.get("actor") or "",
                    command=record.data.get("command") or "",
                )
            elif record.type is RecordType.OUTCOME:
                status = str(record.data.get("status"))
                entry["counts"][status] = entry["counts"].get(status, 0) + 1
            elif record.type is RecordType.RUN_END:
                entry["finished"] = True
                # A run that wrote nothing (an export) says what it did in its summary.
                summary = record.data.get("summary")
                counts = summary.get("counts") if isinstance(summary, dict) else None
                if not entry["counts"] and isinstance(counts, dict):
                    entry["counts"] = {str(k): int(v) for k, v in counts.items() if isinstance(v, int)}
        return [RunSummary(run_id, **entry) for run_id, entry in found.items()]


# --- Storage ------------------------------------------------------------------------------------


class JournalStore(Protocol):
    """Where a journal is kept. ``reader`` opens it for reading (changing nothing anyone else
    sees); ``writer`` holds the one-writer lock (or lease) for a whole command and yields the
    journal to append to, published as the store publishes (at the latest when it closes)."""

    @property
    def path(self) -> Path:
        """The local file the journal is read from and appended to."""

    def describe(self) -> str:
        """The location for messages (credentials never shown)."""

    def reader(self) -> Journal: ...

    def writer(
        self,
        *,
        actor: str,
        command: str,
        environment: str,
        timeout: float = 0.0,
        break_lock: str | None = None,
        say: Callable[[str], None] = lambda _: None,
    ) -> AbstractContextManager[Journal]: ...

    def verify(self, expect_head: str | None = None) -> VerifyReport: ...


@dataclass(frozen=True)
class LocalStore:
    """A journal in one local file, its writers serialized by ``JournalLock``."""

    file: Path

    @property
    def path(self) -> Path:
        return self.file

    def describe(self) -> str:
        return str(self.file)

    def reader(self) -> Journal:
        return Journal(self.file)

    @contextlib.contextmanager
    def writer(
        self,
        *,
        actor: str,
        command: str,
        environment: str,
        timeout: float = 0.0,
        break_lock: str | None = None,
        say: Callable[[str], None] = lambda _: None,
    ) -> Iterator[Journal]:
        if break_lock is not None:
            raise JournalError(
                "--break-lock applies to a journal kept in git; a local journal's lock is "
                "released by the operating system when its holder dies"
            )
        with JournalLock(self.file, actor=actor, command=command, timeout=timeout):
            journal = Journal(self.file, writable=True)
            for torn in journal.set_aside:
                say(f"Warning: the journal's last line was torn ({torn}); it was set aside, not accepted.")
            yield journal

    def verify(self, expect_head: str | None = None) -> VerifyReport:
        return verify(self.file, expect_head)


def is_git_location(location: str) -> bool:
    return location.startswith("git+")
