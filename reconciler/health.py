"""The health gate: after an apply changed prompts, watch them, and undo the change if they got worse.

    apply's writes ──▶ watch the changed prompts for DURATION ──▶ judge (reconciler.metrics)
                                                                     │
         healthy (or inconclusive with --on-inconclusive pass) ◀─────┤
         breached (or inconclusive with fail) ──▶ roll back this run's prompt changes
                                                  (the journal's rollback plan, executed by apply
                                                  with the same If-Match locking: a prompt changed
                                                  by someone since is a conflict, never overwritten)
                                                  ──▶ journal the verdict, notify webhooks, exit 4

The baseline is the same prompts over a window as long as DURATION that ends when the run
started (the run's ``run_start`` record). Numbers come from the analytics query through the run's
client, so the gate shares the run's one rate limiter. The verdict, with every number and limit,
is journaled as a ``health_verdict`` record of the run it judged, healthy or not.

This module decides nothing about metrics (``reconciler.metrics`` does) and writes to the org
only through the ``execute`` it is given (the command's own apply path, progress lines included).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx

from reconciler.apply import ApplyResult, Status
from reconciler.client.api import GatewayClient
from reconciler.errors import ConfigError, HealthGateFailed
from reconciler.journal import Journal, JournalRecord, RecordType
from reconciler.metrics import (
    MIN_CALLS,
    Judgement,
    PromptMetrics,
    Verdict,
    calls_from_records,
    format_duration,
    judge,
    overall_verdict,
    parse_duration,
    prompt_metrics,
)
from reconciler.models import Kind, Prompt, PromptHealthGate
from reconciler.notify import Event, deliver
from reconciler.plan import Action, Plan
from reconciler.rollback import rollback_plan
from reconciler.workspace import Workspace

PROGRESS_EVERY_S = 5.0
OnInconclusive = Literal["pass", "fail"]
Execute = Callable[[Workspace, Plan, GatewayClient, Journal, str, str], Awaitable[ApplyResult]]
WATCHED_ACTIONS = {Action.CREATE.value, Action.UPDATE.value, Action.ROLLBACK.value}


@dataclass(frozen=True)
class GateSettings:
    duration_s: float
    on_inconclusive: OnInconclusive = "pass"
    min_calls: int = MIN_CALLS
    progress_every_s: float = PROGRESS_EVERY_S


@dataclass(frozen=True)
class WatchedPrompt:
    """A prompt this run changed: its name, live id, what was done, and the limits it declares."""

    name: str
    prompt_id: str
    action: str
    declared: PromptHealthGate | None


def gate_settings(ws: Workspace, duration_s: float | None, on_inconclusive: str) -> GateSettings | None:
    """The option wins over the environment's ``healthGate``; None (or 0s) means no gate."""
    if on_inconclusive not in ("pass", "fail"):
        raise ConfigError(f"--on-inconclusive must be pass or fail, not {on_inconclusive!r}")
    decide: OnInconclusive = "fail" if on_inconclusive == "fail" else "pass"
    if duration_s is None:
        env = ws.project.environments.get(ws.connection.environment)
        configured = env.health_gate if env is not None else None
        if configured is None:
            return None
        try:
            duration_s = parse_duration(configured)
        except ValueError as exc:
            raise ConfigError(f"environment {ws.connection.environment}: healthGate: {exc}") from None
    return GateSettings(duration_s, decide) if duration_s > 0 else None


def watched_prompts(records: Sequence[JournalRecord], ws: Workspace) -> list[WatchedPrompt]:
    """The prompts the run created or updated (what its applied outcomes say), once each."""
    declared = {
        m.manifest.metadata.name: m.manifest.spec.health_gate
        for m in ws.manifests.manifests
        if isinstance(m.manifest, Prompt)
    }
    found: dict[str, WatchedPrompt] = {}
    for record in records:
        data = record.data
        if (
            record.type is RecordType.OUTCOME
            and data.get("kind") == Kind.PROMPT.value
            and data.get("status") == Status.APPLIED.value
            and data.get("action") in WATCHED_ACTIONS
            and data.get("live_id")
        ):
            name = str(data["name"])
            found[name] = WatchedPrompt(name, str(data["live_id"]), str(data["action"]), declared.get(name))
    return list(found.values())


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _window(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": start.isoformat(timespec="milliseconds"), "end": end.isoformat(timespec="milliseconds")}


async def _measure(
    client: GatewayClient, prompts: Sequence[WatchedPrompt], start: datetime, end: datetime
) -> dict[str, PromptMetrics]:
    calls = calls_from_records(await client.conversation_details([p.prompt_id for p in prompts], start, end))
    return {p.name: prompt_metrics(p.name, p.prompt_id, calls) for p in prompts}


def progress_line(elapsed_s: float, duration_s: float, metrics: dict[str, PromptMetrics]) -> str:
    """One line for the terminal while the gate watches."""
    parts = []
    for name, m in metrics.items():
        s = m.overall
        if s.calls and s.success_rate is not None and s.p95_latency_ms is not None:
            parts.append(f"{name} {s.calls} calls, {s.success_rate:.1%} ok, p95 {s.p95_latency_ms:.0f} ms")
        else:
            parts.append(f"{name} no calls yet")
    return f"  health gate {elapsed_s:.0f}s/{format_duration(duration_s)}: " + "; ".join(parts)


async def health_gate(
    ws: Workspace,
    client: GatewayClient,
    journal: Journal,
    result: ApplyResult,
    duration_s: float | None,
    on_inconclusive: str,
    execute: Execute,
    *,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    interactive: bool | None = None,
    clock: Callable[[], datetime] = _utc_now,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> Verdict | None:
    """Watch what ``result``'s run changed; roll it back and raise ``HealthGateFailed`` if it got
    worse. Returns the verdict when the gate passed, None when there was nothing to watch."""
    settings = gate_settings(ws, duration_s, on_inconclusive)
    if settings is None:
        return None
    if result.exit_code != 0:
        say("Health gate skipped: the apply did not fully succeed (see above).")
        return None
    records = journal.run(result.run_id)
    prompts = watched_prompts(records, ws)
    if not prompts:
        say("Health gate: this run changed no prompt; nothing to watch.")
        return None
    duration = timedelta(seconds=settings.duration_s)
    started = datetime.fromisoformat(records[0].ts)
    watch_start = clock()
    watch_end = watch_start + duration
    say(
        f"Health gate: watching {', '.join(p.name for p in prompts)} for "
        f"{format_duration(settings.duration_s)} (until {watch_end.strftime('%H:%M:%S')} UTC)."
    )
    baseline = await _measure(client, prompts, started - duration, started)
    show = sys.stderr.isatty() if interactive is None else interactive
    while (remaining := (watch_end - clock()).total_seconds()) > 0:
        await sleep(min(settings.progress_every_s, remaining) if show else remaining)
        now = clock()
        if show and now < watch_end:
            so_far = await _measure(client, prompts, watch_start, now)
            say(progress_line((now - watch_start).total_seconds(), settings.duration_s, so_far))
    watched = await _measure(client, prompts, watch_start, watch_end)
    judgements = [
        j for p in prompts for j in judge(watched[p.name], baseline[p.name], p.declared, settings.min_calls)
    ]
    verdict = overall_verdict(judgements)
    failed = verdict is Verdict.BREACHED or (
        verdict is Verdict.INCONCLUSIVE and settings.on_inconclusive == "fail"
    )
    facts: dict[str, Any] = {
        "verdict": verdict.value,
        "on_inconclusive": settings.on_inconclusive,
        "duration_s": settings.duration_s,
        "window": _window(watch_start, watch_end),
        "baseline_window": _window(started - duration, started),
        "prompts": [j.as_dict() for j in judgements],
        "action": "rollback" if failed else "none",
    }
    await asyncio.to_thread(journal.append, result.run_id, RecordType.HEALTH_VERDICT, facts)
    for j in judgements:
        if j.verdict is not Verdict.HEALTHY:
            mark = "✗" if j.verdict is Verdict.BREACHED else "?"
            say(f"  {mark} {j.subject}: {j.verdict.value}: {j.reason}")
    if not failed:
        passing = "passed" if verdict is Verdict.HEALTHY else "inconclusive; passing (--on-inconclusive pass)"
        say(f"Health gate {passing}; verdict journaled, journal head {journal.head}.")
        return verdict
    return await _roll_back(ws, client, journal, result, records, judgements, verdict, facts, execute, say)


async def _roll_back(
    ws: Workspace,
    client: GatewayClient,
    journal: Journal,
    result: ApplyResult,
    records: Sequence[JournalRecord],
    judgements: Sequence[Judgement],
    verdict: Verdict,
    facts: dict[str, Any],
    execute: Execute,
    say: Callable[[str], None],
) -> Verdict:
    why = "breached" if verdict is Verdict.BREACHED else "inconclusive (--on-inconclusive fail)"
    say(f"Health gate {why}: rolling back this run's prompt changes (run {result.run_id}).")
    prompt_outcomes = [r for r in records if r.data.get("kind") == Kind.PROMPT.value]
    undo, refused = rollback_plan(
        prompt_outcomes, environment=ws.connection.environment, project=ws.project.project
    )
    for reason in refused:
        say(f"  cannot roll back {reason}")
    undone = await execute(ws, undo, client, journal, f"rollback {result.run_id} (health gate)", "")
    conflicts = [o.message or str(o.change.key) for o in undone.outcomes if o.status is Status.CONFLICT]
    failures = [o.message or str(o.change.key) for o in undone.outcomes if o.status is Status.FAILED]
    for message in conflicts:
        say(f"  Conflict during the rollback (left as it is, not overwritten): {message}")
    rolled_back = [str(o.change.key) for o in undone.outcomes if o.status is Status.APPLIED]
    event = Event(
        name="HEALTH_GATE_FAILED",
        data={
            **facts,
            "rollback": {
                "runId": undone.run_id,
                "rolledBack": rolled_back,
                "conflicts": conflicts,
                "failed": failures,
                "refused": refused,
            },
        },
        run_id=result.run_id,
        timestamp=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    if ws.webhooks:
        async with httpx.AsyncClient() as http:
            for delivery in await deliver(http, ws.webhooks, event):
                await asyncio.to_thread(
                    journal.append, result.run_id, RecordType.NOTIFICATION, delivery.as_record()
                )
    say(f"Rollback run {undone.run_id}; journal head {journal.head}")
    breached = [
        f"{j.subject}: " + ", ".join(c.describe() for c in j.checks if c.breached)
        for j in judgements
        if j.verdict is Verdict.BREACHED
    ] or [f"{j.subject}: {j.reason}" for j in judgements if j.verdict is Verdict.INCONCLUSIVE]
    state = (
        "rolled back"
        if not (conflicts or failures or refused)
        else f"rollback INCOMPLETE: {len(conflicts)} conflict(s), {len(failures)} failed, "
        f"{len(refused)} refused"
    )
    raise HealthGateFailed(f"health gate {verdict.value} ({state}): " + "; ".join(breached))
