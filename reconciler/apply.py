"""Executing a plan against the live org: exactly what it shows, never over someone else's change.

Each change of a ``Plan`` becomes one guarded write:

    create (client id)   PUT  If-None-Match: *        412 -> look: ours already? else conflict
    create (prompt)      POST, unique name            409 / lost response -> look it up by name
    update / rollback    PUT  If-Match: <plan etag>   412 -> look: ours already? else conflict
    delete               DELETE If-Match: <plan etag> 412 -> conflict; 404 -> already gone

"Look" re-reads the resource: when it already holds exactly what we meant to write, an earlier
attempt of ours landed (its response was lost) and the change counts as applied. Anything else is
a conflict: reported (exit 3), never retried, never overwritten; changes that depend on it are
skipped, independent ones go on. Every write is journaled before it is sent (intent) and after
(outcome). Partial results are part of the contract: ``apply_plan`` returns an outcome for every
change whatever happened, as Terraform's Apply returns the partial state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx

from reconciler.client.api import GatewayClient, WriteResult
from reconciler.diff import IgnoreRules, compare, fingerprint, live_document, live_matches
from reconciler.errors import (
    ApiError,
    ConflictError,
    JournalError,
    NotFoundError,
    ServerError,
    TransportError,
)
from reconciler.journal import Journal, RecordType, summarize
from reconciler.kinds import adapter_for
from reconciler.models import Kind, ResourceKey
from reconciler.notify import Event, WebhookTarget, deliver
from reconciler.plan import Action, Change, Plan
from reconciler.redact import Redactor

# A prompt create is sent at most this many times (as many as any other request), each retry
# after looking it up by name, so a lost response never leads to a duplicate.
CREATE_ATTEMPTS = 6


class Status(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    CONFLICT = "conflict"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Outcome:
    """What happened to one change. ``service_changed`` lists fields the service stored
    differently from what we sent (a server default we do not know: a perpetual diff)."""

    change: Change
    status: Status
    message: str = ""
    http_status: int = 0
    latency_ms: float = 0.0
    live_id: str | None = None
    etag_after: str | None = None
    service_changed: tuple[str, ...] = ()
    # The resource as the service stored it ({spec, labels} plus its version), when it answered
    # with it: what webhooks announce (the resource after the write, not what we sent).
    stored: dict[str, Any] | None = None


# What an applied change did, in the words users read.
_DONE = {
    Action.CREATE: "created",
    Action.UPDATE: "updated",
    Action.DELETE: "deleted",
    Action.ROLLBACK: "rolled back",
    Action.NO_OP: "unchanged",
}


@dataclass(frozen=True)
class ApplyResult:
    run_id: str
    outcomes: tuple[Outcome, ...]
    journal_head: str
    journal_failure: str = ""  # why the journal could not be written, when it could not
    interrupted: bool = False  # stopped before every change was started (Ctrl-C)

    def __repr__(self) -> str:
        # Short on purpose (see ``Plan.__repr__``): asyncio.run formats the finished main task,
        # result included, twice when it restores the SIGINT handler (CPython 3.11).
        return (
            f"ApplyResult(run_id={self.run_id!r}, outcomes=<{len(self.outcomes)} outcomes>, "
            f"journal_head={self.journal_head!r}, journal_failure={self.journal_failure!r}, "
            f"interrupted={self.interrupted!r})"
        )

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status is status)

    @property
    def exit_code(self) -> int:
        # Changes are only skipped because something they depend on failed or conflicted, so
        # the cause decides: any failure is an error (1); otherwise conflicts make it 3.
        if self.count(Status.FAILED) or self.journal_failure or self.interrupted:
            return 1
        if self.count(Status.CONFLICT):
            return 3
        return 1 if self.count(Status.SKIPPED) else 0


@dataclass
class ApplyOptions:
    """Everything apply needs besides the plan and the client."""

    redactor: Redactor
    webhooks: Sequence[WebhookTarget] = ()
    actor: str = ""
    git_commit: str | None = None
    command: str = "apply"
    on_outcome: Callable[[Outcome], None] | None = None
    notify_transport: httpx.AsyncBaseTransport | None = None
    ignore: IgnoreRules = field(default_factory=IgnoreRules)
    parallelism: int = 10  # writes in flight at once
    # Set (by a first Ctrl-C) to send no new writes: those in flight finish and are journaled,
    # the rest are skipped, and the run ends with its summary.
    stop: asyncio.Event | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _same(kind: Kind, stored: dict[str, Any], intended: dict[str, Any]) -> bool:
    """Does the live body hold what we meant to write (after the service's defaults)?"""
    live = adapter_for(kind).from_wire(stored)
    desired = {"spec": adapter_for(kind).with_server_defaults(intended["spec"]), "labels": intended["labels"]}
    return fingerprint(live_document(live)) == fingerprint(desired)


_Pending = tuple[RecordType, dict[str, Any], asyncio.Future[None]]


class _GroupCommit:
    """A run's journal records, made durable in groups (group commit, as databases do).

    ``append`` returns once its record is durable, so a change that awaits its intent sends its
    write only after that: the journal's promise. Records that arrive while a flush is under way
    wait for the next one, which writes them all with one write and one fsync. Record by record
    (a lock, an fsync each) the journal would set the pace of the whole apply whatever its
    parallelism; grouped, the changes in flight share each flush. A change's records keep their
    order because it awaits each before it goes on; one flusher at a time keeps batches in order.

    The first failed flush is final: every record waiting (its batch, and any queued behind it)
    fails with its ``JournalError`` and nothing more is written: no audit, no write. The next run
    records what became of the writes whose outcome is missing.
    """

    def __init__(self, journal: Journal, run_id: str) -> None:
        self.journal, self.run_id = journal, run_id
        self.failure: JournalError | None = None
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, record_type: RecordType, data: dict[str, Any]) -> None:
        """Return once the record is durable; raise ``JournalError`` if it cannot be."""
        if self.failure is not None:
            raise self.failure
        durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record_type, data, durable))
        if self._flusher is None:
            # It starts on the loop's next turn: records that arrive meanwhile join its batch.
            self._flusher = asyncio.create_task(self._flush())
        await durable

    async def close(self) -> None:
        """Wait for the flush under way, if any, so that none outlives the run."""
        if self._flusher is not None:
            await self._flusher

    async def _flush(self) -> None:
        batch: list[_Pending] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                entries = [(self.run_id, record_type, data) for record_type, data, _ in batch]
                try:
                    # In a thread, so that the event loop keeps every request in flight moving
                    # during the fsync. The journal moves its head only once the whole batch is
                    # durable, so a cancelled flush never leaves it half applied.
                    await asyncio.to_thread(self.journal.append_many, entries)
                except JournalError as exc:
                    # Final, and for the records queued behind too: if cutting the failed batch
                    # off failed as well, a later one would land after a torn line. (Nothing more
                    # is queued after this: append refuses once ``failure`` is set.)
                    self.failure = exc
                    batch, self._pending = batch + self._pending, []
                    _settle(batch, exc)
                except Exception as exc:  # a bug fails the changes of this batch, as one append did
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
                batch = []
        finally:
            self._flusher = None
            if batch:  # cancelled mid-flush (the loop shutting down): no waiter may be left hanging
                self.failure = self.failure or JournalError(
                    "the run was cancelled while the journal was being written; "
                    "no further change is sent to the org"
                )
                _settle(batch + self._pending, self.failure)
                self._pending = []


def _settle(batch: list[_Pending], error: BaseException | None) -> None:
    for _, _, durable in batch:
        # A change cancelled while it waited has nobody to tell (its record is written all the
        # same: the next run looks into an intent left without outcome).
        if durable.done():
            continue
        if error is None:
            durable.set_result(None)
        else:
            durable.set_exception(error)


class _Executor:
    """Runs one plan's changes; one instance per run (holds the run's progress)."""

    def __init__(
        self,
        plan: Plan,
        client: GatewayClient,
        journal: Journal,
        options: ApplyOptions,
        run_id: str,
        notify_http: httpx.AsyncClient | None,
    ) -> None:
        self.plan = plan
        self.client = client
        self.journal = _GroupCommit(journal, run_id)
        self.options = options
        self.run_id = run_id
        self.notify_http = notify_http
        self.done: dict[ResourceKey, asyncio.Event] = {c.key: asyncio.Event() for c in plan.changes}
        self.outcomes: dict[ResourceKey, Outcome] = {}
        self.notifications: list[asyncio.Task[None]] = []
        self.slots = asyncio.Semaphore(max(1, options.parallelism))

    @property
    def journal_failure(self) -> JournalError | None:
        """Set when the journal cannot be written: no audit, no write. Nothing more is sent."""
        return self.journal.failure

    async def run(self) -> list[Outcome]:
        try:
            await asyncio.gather(*(self._run_change(i, c) for i, c in enumerate(self.plan.changes)))
            if self.notifications:
                await asyncio.gather(*self.notifications)
        finally:
            await self.journal.close()
        return [self.outcomes[c.key] for c in self.plan.changes]

    async def _run_change(self, index: int, change: Change) -> None:
        try:
            blockers = []
            for dep in change.depends_on:
                if dep in self.done:
                    await self.done[dep].wait()
                    if self.outcomes[dep].status not in (Status.APPLIED, Status.UNCHANGED):
                        blockers.append(dep)
            if change.action is Action.NO_OP:
                outcome = Outcome(change, Status.UNCHANGED, live_id=change.live_id, etag_after=change.etag)
            elif blockers:
                names = ", ".join(str(b) for b in blockers)
                outcome = Outcome(change, Status.SKIPPED, f"skipped: depends on {names}, which did not apply")
                await self._journal_outcome(index, outcome)
            else:
                sent = False
                async with self.slots:  # a write starts only with a slot free, and only if not stopped
                    if self.journal_failure is not None:
                        outcome = Outcome(change, Status.FAILED, "not sent: the journal cannot be written")
                    elif self.options.stop is not None and self.options.stop.is_set():
                        outcome = Outcome(change, Status.SKIPPED, "not started: interrupted")
                    else:
                        outcome, sent = await self._execute(index, change), True
                # A slot bounds the requests in flight, not the records being made durable: the
                # next change may send while this one's outcome is written (it is still done,
                # for its dependants, only once that record is durable).
                if sent:
                    await self._conclude(index, outcome)
        except JournalError as exc:
            # The intent or the outcome could not be recorded: no more writes are sent (see
            # journal_failure). A write that was sent has an intent without outcome; the next run
            # records what it finds.
            outcome = Outcome(change, Status.FAILED, f"journal: {exc}")
        except Exception as exc:  # a bug must not leave dependants waiting forever
            outcome = Outcome(change, Status.FAILED, f"internal error: {type(exc).__name__}: {exc}")
            with contextlib.suppress(JournalError):
                await self._journal_outcome(index, outcome)
        self.outcomes[change.key] = outcome
        self.done[change.key].set()
        if self.options.on_outcome:
            self.options.on_outcome(outcome)

    # --- one change --------------------------------------------------------------------------

    def _wire_body(self, change: Change) -> dict[str, Any]:
        assert change.after is not None
        return adapter_for(change.key.kind).to_wire(
            change.key.name, change.after["spec"], change.after["labels"]
        )

    def _method_and_path(self, change: Change) -> tuple[str, str]:
        adapter = adapter_for(change.key.kind)
        match change.action:
            case Action.CREATE if adapter.id_strategy == "post":
                return "POST", adapter.collection_path
            case Action.CREATE:
                return "PUT", adapter.item_path(change.key.name)
            case Action.DELETE:
                return "DELETE", adapter.item_path(change.live_id or change.key.name)
            case _:
                return "PUT", adapter.item_path(change.live_id or change.key.name)

    async def _execute(self, index: int, change: Change) -> Outcome:
        """Record the intent (durable before anything is sent), then send the change."""
        method, path = self._method_and_path(change)
        redact = self.options.redactor
        await self._append(
            RecordType.INTENT,
            {
                "change_id": index,
                "action": change.action.value,
                "kind": change.key.kind.value,
                "name": change.key.name,
                "method": method,
                "path": path,
                "etag_before": change.etag,
                "body": redact.value(self._redacted_doc(change.key.kind, change.after)),
            },
        )
        started = time.perf_counter()
        try:
            outcome = await self._write(change)
        except ApiError as exc:
            outcome = Outcome(change, Status.FAILED, redact.text(str(exc)), exc.status)
        return replace(outcome, latency_ms=round((time.perf_counter() - started) * 1000, 2))

    async def _conclude(self, index: int, outcome: Outcome) -> None:
        """Record a sent change's outcome, then tell the webhooks about it if it applied."""
        await self._journal_outcome(index, outcome)
        if outcome.status is Status.APPLIED:
            self._notify(outcome.change, outcome)

    async def _write(self, change: Change) -> Outcome:
        kind = change.key.kind
        match change.action:
            case Action.DELETE:
                return await self._delete(change)
            case Action.CREATE if adapter_for(kind).id_strategy == "post":
                return await self._create_by_post(change)
            case Action.CREATE:
                return await self._guarded_put(change, if_match=None)
            case Action.UPDATE | Action.ROLLBACK:
                return await self._guarded_put(change, if_match=change.etag)
            case _:
                return Outcome(change, Status.UNCHANGED)

    async def _guarded_put(self, change: Change, if_match: str | None) -> Outcome:
        kind, body = change.key.kind, self._wire_body(change)
        live_id = change.live_id or change.key.name
        try:
            result = await self.client.put(
                kind, live_id, body, if_match=if_match, create_only=if_match is None
            )
        except ConflictError as exc:
            return await self._after_conflict(change, live_id, exc)
        return self._applied(change, result, 200)

    async def _after_conflict(self, change: Change, live_id: str, exc: ConflictError) -> Outcome:
        """A 409/412: ours already (a retry after a lost response), or someone else's change."""
        assert change.after is not None
        if live_id:
            found = await self.client.get(change.key.kind, live_id)
        else:  # a prompt create: its id is whatever the service gave the name
            found = await self.client.find(change.key.kind, change.key.name)
        if found is not None and _same(change.key.kind, found[1], change.after):
            live, stored = found
            return self._applied(
                change,
                WriteResult(live.id, live.etag, stored),
                exc.status,
                note="an earlier attempt of this run had already landed",
            )
        return Outcome(
            change,
            Status.CONFLICT,
            f"{change.key} changed since the plan (etag {change.etag or 'none'}); "
            "nothing was overwritten. Re-run plan to see the change.",
            exc.status,
        )

    async def _create_by_post(self, change: Change) -> Outcome:
        """POST a prompt; after a lost response or 5xx, look it up by name before any retry."""
        assert change.after is not None
        body = self._wire_body(change)
        last: ApiError | None = None
        for attempt in range(CREATE_ATTEMPTS):
            if attempt:
                found = await self.client.find_prompt(change.key.name)
                if found is not None:
                    live, stored = found
                    if _same(Kind.PROMPT, stored, change.after):
                        return self._applied(
                            change,
                            WriteResult(live.id, live.etag, stored),
                            201,
                            note="found after a lost response; not re-sent",
                        )
                    return Outcome(
                        change,
                        Status.CONFLICT,
                        f"a prompt named {change.key.name!r} was created by someone "
                        "else since the plan; nothing was overwritten",
                        409,
                    )
                await self.client.session.backoff(attempt)
            try:
                result = await self.client.create_prompt(body)
            except ConflictError as exc:
                return await self._after_conflict(change, "", exc)
            except (ServerError, TransportError) as exc:
                last = exc
                continue
            return self._applied(change, result, 201)
        assert last is not None
        raise last

    async def _delete(self, change: Change) -> Outcome:
        live_id = change.live_id or change.key.name
        try:
            await self.client.delete(change.key.kind, live_id, if_match=change.etag)
        except NotFoundError:
            return Outcome(change, Status.APPLIED, "already gone", 404, live_id=live_id)
        except ConflictError as exc:
            return Outcome(
                change,
                Status.CONFLICT,
                f"{change.key} changed since the plan; not deleted",
                exc.status,
            )
        return Outcome(change, Status.APPLIED, "deleted", 204, live_id=live_id)

    def _applied(self, change: Change, result: WriteResult, http_status: int, note: str = "") -> Outcome:
        """Success, plus post-apply verification: did the service store what we sent?"""
        assert change.after is not None
        kind = change.key.kind
        stored = adapter_for(kind).from_wire(result.body)
        desired = {
            "spec": adapter_for(kind).with_server_defaults(change.after["spec"]),
            "labels": change.after["labels"],
        }
        changed: tuple[str, ...] = ()
        # Most writes are stored exactly as sent: then the stored document is the desired one.
        stored_doc = desired if live_matches(desired, stored) else live_document(stored)
        if stored_doc is not desired:
            verdict = compare(desired, stored_doc, kind, self.options.ignore.pointers_for(change.key))
            changed = tuple(f.path for f in verdict.fields)
        message = note or _DONE[change.action]
        if changed:
            message += (
                "; the service changed " + ", ".join(changed) + " (a perpetual diff: update the manifest)"
            )
        return Outcome(
            change,
            Status.APPLIED,
            message,
            http_status,
            live_id=result.live_id,
            etag_after=result.etag,
            service_changed=changed,
            stored={
                **stored_doc,
                "version": result.body.get("version", result.body.get("revision")),
            },
        )

    # --- records -----------------------------------------------------------------------------

    def _redacted_doc(self, kind: Kind, doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        return {"spec": self.options.redactor.resource(kind, doc["spec"]), "labels": doc["labels"]}

    async def _append(self, record_type: RecordType, data: dict[str, Any]) -> None:
        # This change waits for its record to be durable before it goes on; the records of
        # changes in flight together share one fsync (see _GroupCommit).
        await self.journal.append(record_type, data)

    async def _journal_outcome(self, index: int, outcome: Outcome) -> None:
        change, redact = outcome.change, self.options.redactor
        await self._append(
            RecordType.OUTCOME,
            {
                "change_id": index,
                "action": change.action.value,
                "kind": change.key.kind.value,
                "name": change.key.name,
                "status": outcome.status.value,
                "http_status": outcome.http_status,
                "latency_ms": outcome.latency_ms,
                "etag_before": change.etag,
                "etag_after": outcome.etag_after,
                "live_id": outcome.live_id or change.live_id,
                "before": redact.value(self._redacted_doc(change.key.kind, change.before)),
                "after": redact.value(self._redacted_doc(change.key.kind, change.after)),
                "error": outcome.message if outcome.status is not Status.APPLIED else None,
                "service_changed": list(outcome.service_changed),
            },
        )

    def _notify(self, change: Change, outcome: Outcome) -> None:
        if not self.options.webhooks:
            return
        verb = {Action.CREATE: "CREATED", Action.DELETE: "DELETED"}.get(change.action, "UPDATED")
        kind_word = {
            Kind.FUNCTION_DEFINITION: "FUNCTION_DEFINITION",
            Kind.PROMPT: "PROMPT",
            Kind.CONTEXT_POLICY: "CONTEXT_POLICY",
        }[change.key.kind]
        # The resource after the write (id, version, etag and what the service stored); for a
        # delete, the last body it had. Redacted like everything else that leaves the process.
        kind = change.key.kind
        shown = outcome.stored or change.after or change.before
        data = self.options.redactor.value(self._redacted_doc(kind, shown))
        identity = {"id": outcome.live_id or change.live_id, "etag": outcome.etag_after}
        if outcome.stored is not None:
            identity["version"] = outcome.stored.get("version")
        event = Event(
            name=f"{kind_word}_{verb}",
            data={"kind": kind.value, "name": change.key.name, **identity, **(data or {})},
            run_id=self.run_id,
            timestamp=_now(),
        )
        self.notifications.append(asyncio.ensure_future(self._deliver(event)))

    async def _deliver(self, event: Event) -> None:
        assert self.notify_http is not None  # made whenever there are webhooks
        for delivery in await deliver(self.notify_http, self.options.webhooks, event):
            with contextlib.suppress(JournalError):  # it is the run's journal_failure
                await self._append(RecordType.NOTIFICATION, delivery.as_record())


async def apply_plan(
    plan: Plan, client: GatewayClient, journal: Journal, options: ApplyOptions, *, plan_hash: str
) -> ApplyResult:
    """Execute ``plan``; returns an outcome for every change, whatever happened."""
    run_id = journal.start_run(
        actor=options.actor,
        environment=plan.environment,
        plan_hash=plan_hash,
        git_commit=options.git_commit,
        command=options.command,
    )
    # Only for webhooks: each httpx client builds an SSL context (20-45 ms, it reads the CA bundle).
    notifying = httpx.AsyncClient(transport=options.notify_transport) if options.webhooks else None
    async with notifying or contextlib.nullcontext() as notify_http:
        executor = _Executor(plan, client, journal, options, run_id, notify_http)
        outcomes = await executor.run()
    written = [o for o in outcomes if o.change.action is not Action.NO_OP]
    summary = summarize([o.latency_ms for o in written if o.latency_ms], [o.status.value for o in written])
    failure = executor.journal_failure
    interrupted = options.stop is not None and options.stop.is_set()
    if interrupted:
        summary["interrupted"] = True
    if failure is None:
        try:
            journal.append(run_id, RecordType.RUN_END, {"summary": summary})
        except JournalError as exc:
            failure = exc
    return ApplyResult(run_id, tuple(outcomes), journal.head, str(failure) if failure else "", interrupted)


async def record_unfinished(journal: Journal, client: GatewayClient, redactor: Redactor) -> list[str]:
    """Give every intent left without an outcome (a run killed, or a journal that could not be
    written) the outcome the live org shows now: status "unknown", with what was found. Returns a
    line per intent for the user. Runs under the journal lock, before this run writes anything."""
    notes = []
    for intent in journal.unfinished_intents():
        data = intent.data
        kind, name = Kind(data["kind"]), str(data["name"])
        found = await client.find(kind, name)
        live = found[0] if found else None
        after = {"spec": redactor.resource(kind, live.spec), "labels": live.labels} if live else None
        journal.append(
            intent.run_id,
            RecordType.OUTCOME,
            {
                "change_id": data.get("change_id"),
                "action": data.get("action"),
                "kind": kind.value,
                "name": name,
                "status": "unknown",
                "http_status": None,
                "latency_ms": None,
                "etag_before": data.get("etag_before"),
                "etag_after": live.etag if live else None,
                "live_id": live.id if live else None,
                "before": None,
                "after": redactor.value(after),
                "error": "the outcome of this write was never recorded; this is what the org held afterwards",
                "landed": live is not None and live.etag != data.get("etag_before"),
                "service_changed": [],
            },
        )
        state = f"now at etag {live.etag}" if live else "not in the org"
        notes.append(f"{kind.value}/{name} (run {intent.run_id}): outcome never recorded; {state}")
    return notes
