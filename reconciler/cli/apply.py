"""`reconciler apply` and `reconciler rollback`: the only commands that write to the live org."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import click

from reconciler.apply import ApplyOptions, ApplyResult, Status, apply_plan, record_unfinished
from reconciler.cli import main
from reconciler.cli.metrics import DURATION
from reconciler.cli.options import (
    collections_deferred,
    color_option,
    env_option,
    exclude_option,
    given_variables,
    is_quiet,
    journal_option,
    lock_timeout_option,
    note,
    parallelism_option,
    result_format_option,
    run,
    target_option,
    use_color,
    var_option,
    wants_json,
)
from reconciler.cli.plan import show_plan
from reconciler.cli.progress import RunProgress
from reconciler.client.api import GatewayClient
from reconciler.errors import ConfigError, PlanFileError, StalePlanError
from reconciler.health import health_gate
from reconciler.journal import Journal, LocalStore
from reconciler.models import ResourceKey
from reconciler.plan import Action, Change, Plan
from reconciler.plan_json import SavedPlan, looks_like_plan, read_plan_file
from reconciler.promise import bind_saved_plan
from reconciler.render import redact_change
from reconciler.rollback import revision_rollback_plan, rollback_plan
from reconciler.workspace import (
    Settings,
    Workspace,
    connect,
    ignore_rules,
    load_while_listing,
    make_live_plan,
    open_settings,
    plan_options,
)

# --- who runs this, and where (journaled with every run) ------------------------------------


def detect_actor() -> str:
    try:
        return os.environ.get("GITHUB_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def detect_git_commit() -> str | None:
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def write_step_summary(head: str, text: str) -> None:
    """Add the run's summary and journal head to the GitHub step summary, when in Actions."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(f"{text}\n\nJournal head: `{head}`\n")


async def bind_plan_file(ws: Workspace, client: GatewayClient, saved: SavedPlan, path: Path) -> Plan:
    """The saved plan as apply may execute it: bound to its environment and org, made again from
    the inputs it pins and the live org now, and checked change by change (see promise.py)."""
    plan, origin = saved.plan, saved.origin
    assert origin is not None  # checked by the caller before the workspace was opened
    if plan.environment != ws.connection.environment:
        raise PlanFileError(
            f"{path} was made for environment {plan.environment or '(none)'!r}, "
            f"not {ws.connection.environment or '(none)'!r}; nothing was written"
        )
    if origin.base_url != ws.connection.base_url:
        raise PlanFileError(
            f"{path} was made for the org at {origin.base_url}, not {ws.connection.base_url}; "
            "nothing was written"
        )
    if plan.manifests_digest != ws.manifests.digest:
        raise StalePlanError(
            f"{path} was made from manifests that have changed since "
            f"(digest {plan.manifests_digest[:12]} != {ws.manifests.digest[:12]}); run plan again"
        )
    org_id = await client.organization_id()
    if org_id != origin.org_id:
        raise PlanFileError(
            f"{path} was made for org {origin.org_id}, but these credentials reach org {org_id}; "
            "nothing was written"
        )
    options = plan_options(
        ws,
        prune=origin.prune,
        targets=[ResourceKey.parse(t) for t in origin.targets],
        excludes=[ResourceKey.parse(e) for e in origin.excludes],
    )
    fresh = await make_live_plan(ws, client, options)

    def shown(change: Change) -> Any:
        after = redact_change(change, ws.redactor.resource).after
        return json.loads(ws.redactor.text(json.dumps(after)))

    bound = bind_saved_plan(plan, fresh, shown, prune=options.prune)
    for line in bound.skipped:
        note(f"Not applied: {line}")
    return bound.plan


def read_saved(path: Path, key: bytes | None) -> SavedPlan:
    saved = read_plan_file(path, key)
    if saved.origin is None:
        raise PlanFileError(
            f"{path} does not say what it was made from (an older reconciler made it); run plan again"
        )
    if key is None and saved.has_mac:
        note("Note: the plan carries a MAC, but RECONCILER_PLAN_KEY is not set here, so it was not checked.")
    return saved


def confirm(auto_approve: bool, question: str) -> None:
    if auto_approve:
        return
    if not sys.stdin.isatty():
        raise ConfigError(
            "refusing to write without confirmation: no terminal to ask on; "
            "review the plan and pass --auto-approve"
        )
    answer = click.prompt(
        f"{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value",
        default="",
        show_default=False,
    )
    if answer.strip() != "yes":
        raise ConfigError("apply cancelled")


def summary_line(result: ApplyResult, what: str = "Apply") -> str:
    applied = [o for o in result.outcomes if o.status is Status.APPLIED]
    counts = {a: sum(1 for o in applied if o.change.action is a) for a in Action}
    # "complete!" only when everything landed, as Terraform says it.
    verdict = "complete!" if result.exit_code == 0 else "finished with problems:"
    return (
        f"{what} {verdict} Resources: {counts[Action.CREATE]} created, "
        f"{counts[Action.UPDATE] + counts[Action.ROLLBACK]} updated, {counts[Action.DELETE]} deleted; "
        f"{result.count(Status.CONFLICT)} conflict(s), {result.count(Status.FAILED)} failed, "
        f"{result.count(Status.SKIPPED)} skipped."
    )


async def execute(
    ws: Workspace, plan: Plan, client: GatewayClient, journal: Journal, command: str, plan_hash: str
) -> ApplyResult:
    stop = asyncio.Event()
    total = sum(1 for c in plan.changes if c.action is not Action.NO_OP)
    live = RunProgress.wanted(is_quiet())
    with RunProgress(total, client.session.limiter, live=live) as shown, interrupt_stops(stop):
        options = ApplyOptions(
            redactor=ws.redactor,
            webhooks=ws.webhooks,
            actor=detect_actor(),
            git_commit=detect_git_commit(),
            command=command,
            on_outcome=lambda outcome: shown.outcome(outcome, note),
            ignore=ignore_rules(ws.project),
            parallelism=client.parallelism,
            stop=stop,
        )
        return await apply_plan(plan, client, journal, options, plan_hash=plan_hash)


@contextlib.contextmanager
def interrupt_stops(stop: asyncio.Event) -> Iterator[None]:
    """While writing: a first Ctrl-C sends no new writes (those in flight finish and are
    journaled, the run ends with its summary); a second exits at once. The journal stays
    consistent either way: every record is fsync'd whole, and an intent left without an
    outcome is recorded by the next run."""
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        if stop.is_set():
            note("Interrupted again: exiting now. The next apply records what became of writes in flight.")
            os._exit(130)
        stop.set()
        note("Interrupted: no new writes; waiting for those in flight (Ctrl-C again to quit at once).")

    try:
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def result_json(result: ApplyResult, what: str) -> str:
    """The run as one JSON object: its id, head and exit code, and each change with its outcome."""
    changes = [
        {
            "kind": o.change.key.kind.value,
            "name": o.change.key.name,
            "action": o.change.action.value,
            "status": o.status.value,
            "message": o.message,
            "http_status": o.http_status or None,
            "live_id": o.live_id or o.change.live_id,
            "etag_after": o.etag_after,
        }
        for o in result.outcomes
        if o.change.action is not Action.NO_OP
    ]
    document = {
        "command": what.lower(),
        "run_id": result.run_id,
        "journal_head": result.journal_head,
        "exit_code": result.exit_code,
        "interrupted": result.interrupted,
        "journal_failure": result.journal_failure or None,
        "changes": changes,
    }
    return json.dumps(document, indent=2, sort_keys=True)


def report(result: ApplyResult, what: str = "Apply") -> None:
    if result.interrupted:
        changes = [o for o in result.outcomes if o.change.action is not Action.NO_OP]
        started = sum(1 for o in changes if o.message != "not started: interrupted")
        note(
            f"Interrupted after {started} of {len(changes)} change(s) (run {result.run_id}). "
            "Run apply again to continue, or `reconciler rollback "
            f"{result.run_id}` to undo what it changed."
        )
    for outcome in result.outcomes:
        if outcome.status is Status.CONFLICT:
            note(f"Conflict: {outcome.message}")
    if result.journal_failure:
        note(f"Error: {result.journal_failure}")
        note("Run apply again once the journal can be written: it records what became of every write.")
    write_step_summary(result.journal_head, summary_line(result, what))
    if wants_json():
        click.echo(result_json(result, what))
        return
    click.echo(summary_line(result, what))
    click.echo(f"Journal run {result.run_id}; journal head {result.journal_head}")


def open_journal(
    ws: Settings, command: str, timeout: float, break_lock: str | None = None
) -> AbstractContextManager[Journal]:
    """The journal, for writing, held for the whole command: a local file under its
    ``JournalLock``, or a git branch under a lease claimed before the first write and released,
    with every record pushed, at the end (see journal_git). Nothing is written to the org when
    it cannot be opened (no audit, no write)."""
    store = ws.journal_store or LocalStore(ws.journal_path)
    return store.writer(
        actor=detect_actor(),
        command=command,
        environment=ws.connection.environment,
        timeout=timeout,
        break_lock=break_lock,
        say=note,
    )


break_lock_option = click.option(
    "--break-lock",
    "break_lock",
    metavar="RUN_ID",
    envvar="RECONCILER_BREAK_LOCK",
    help="A journal kept in git: take over the lease of RUN_ID, a run that died holding it "
    "(the takeover is journaled).",
)


async def record_lost_outcomes(ws: Settings, journal: Journal, client: GatewayClient) -> None:
    for line in await record_unfinished(journal, client, ws.redactor):
        note(f"Recorded a lost outcome: {line}")


@main.command("apply")
@click.argument("source", nargs=-1, type=click.Path())
@env_option
@var_option
@click.option(
    "--auto-approve", is_flag=True, envvar="RECONCILER_AUTO_APPROVE", help="Do not ask for confirmation (CI)."
)
@click.option(
    "--rollback-on-failure",
    is_flag=True,
    help="If a change fails for good, undo what this run already changed.",
)
@target_option
@exclude_option
@click.option("--prune", is_flag=True, help="Delete live resources managed by this project but not in git.")
@parallelism_option
@journal_option
@lock_timeout_option
@break_lock_option
@click.option(
    "--health-gate",
    "health_gate_s",
    type=DURATION,
    default=None,
    envvar="RECONCILER_HEALTH_GATE",
    metavar="DURATION",
    help="After the writes, watch the prompts this run changed for DURATION (e.g. 10m) and roll "
    "them back, exit 4, if they got worse (default: the environment's healthGate).",
)
@click.option(
    "--on-inconclusive",
    type=click.Choice(["pass", "fail"]),
    default="pass",
    show_default=True,
    envvar="RECONCILER_ON_INCONCLUSIVE",
    help="What the health gate does when there was too little traffic to judge.",
)
@result_format_option
@color_option
def apply_command(
    source: tuple[str, ...],
    env_name: str | None,
    auto_approve: bool,
    rollback_on_failure: bool,
    targets: tuple[ResourceKey, ...],
    excludes: tuple[ResourceKey, ...],
    prune: bool,
    parallelism: int,
    journal_path: str | None,
    lock_timeout: float,
    break_lock: str | None,
    health_gate_s: float | None,
    on_inconclusive: str,
    no_color: bool,
) -> None:
    """Apply a saved plan (PLAN.json), or plan PATHS and apply after confirmation.

    A saved plan is made again from what it pins (manifests, options, environment, org) and the
    live org now; apply refuses it unless both agree, and writes only what it showed.

    Exit codes: 0 applied, 1 error, 3 conflict (something changed since the plan; nothing of
    theirs was overwritten), 4 the health gate failed and this run's prompt changes were rolled back.
    """
    plan_file = Path(source[0]) if len(source) == 1 and looks_like_plan(Path(source[0])) else None
    saved = None
    if plan_file is not None:
        key = os.environ.get("RECONCILER_PLAN_KEY")
        saved = read_saved(plan_file, key.encode() if key else None)
        assert saved.origin is not None
    paths = saved.origin.paths if saved is not None and saved.origin is not None else source
    settings = open_settings(env_name, paths, journal=journal_path, variables=given_variables())
    # A journal kept in git is claimed by a push, which others see: bad manifests are found
    # before that, as they are before a saved plan is bound. A local journal's lock is seen by no
    # one else, so under it the manifests load while the org is listed (as plan does).
    loaded = None
    if saved is not None or not isinstance(settings.journal_store, LocalStore):
        with collections_deferred():
            loaded = settings.load()
    note(f"Applying to {settings.connection.description}.")

    async def go() -> ApplyResult | None:
        with open_journal(settings, "apply", lock_timeout, break_lock) as journal:
            async with connect(settings.connection, parallelism=parallelism, writes=True) as client:
                if saved is not None and plan_file is not None:
                    assert loaded is not None
                    ws = loaded
                    earlier = journal.applied_plan(saved.digest)
                    if earlier:
                        raise PlanFileError(
                            f"{plan_file} was applied already, by run {earlier}; make a new plan"
                        )
                    await record_lost_outcomes(ws, journal, client)
                    with collections_deferred():
                        the_plan = await bind_plan_file(ws, client, saved, plan_file)
                else:
                    await record_lost_outcomes(settings, journal, client)
                    options = plan_options(settings, prune=prune, targets=targets, excludes=excludes)
                    with collections_deferred():
                        if loaded is None:
                            ws, listing = await load_while_listing(settings, client)
                        else:
                            ws, listing = loaded, None
                        the_plan = await make_live_plan(ws, client, options, listing)
                    if not wants_json():
                        show_plan(ws, the_plan, "text", use_color(no_color))
                if not the_plan.has_changes:
                    # A plan just printed already said "No changes"; a saved plan was not printed.
                    if saved is not None or wants_json():
                        click.echo("No changes. Nothing to apply.")
                    return None
                # A saved plan was reviewed when it was made (Terraform's habit): no second question.
                confirm(auto_approve or plan_file is not None, "Do you want to perform these actions?")
                plan_hash = saved.digest if saved is not None else the_plan.manifests_digest
                result = await apply_and_undo(ws, the_plan, client, journal, plan_hash, rollback_on_failure)
                await health_gate(
                    ws, client, journal, result, health_gate_s, on_inconclusive, execute, say=note
                )
                return result

    result = run(go())
    if result is None:
        return
    report(result)
    raise SystemExit(result.exit_code)


async def apply_and_undo(
    ws: Workspace, the_plan: Plan, client: GatewayClient, journal: Journal, plan_hash: str, undo_failed: bool
) -> ApplyResult:
    """Execute the plan; with ``undo_failed``, roll back this run if a change failed for good."""
    result = await execute(ws, the_plan, client, journal, "apply", plan_hash)
    if undo_failed and result.count(Status.FAILED) and not result.journal_failure:
        note("A change failed for good: rolling back what this run changed (--rollback-on-failure).")
        undo, refused = rollback_plan(
            journal.run(result.run_id), environment=the_plan.environment, project=the_plan.project
        )
        for reason in refused:
            note(f"  cannot roll back {reason}")
        report(result)
        undone = await execute(ws, undo, client, journal, f"rollback {result.run_id}", "")
        report(undone, "Rollback")
        raise SystemExit(1)  # the run failed, however well the undo went
    return result


async def revision_plan(ws: Workspace, client: GatewayClient, prompt_name: str, revision: int) -> Plan:
    """A plan that puts a prompt back to one of its server-side earlier revisions (/versions)."""
    found = await client.find_prompt(prompt_name)
    if found is None:
        raise ConfigError(f"no prompt named {prompt_name!r} in the live org")
    live, _ = found
    versions = await client.prompt_versions(live.id)
    chosen = [v for v in versions if v.get("revision") == revision]
    if not chosen:
        known = ", ".join(str(v.get("revision")) for v in versions) or "none"
        raise ConfigError(
            f"prompt {prompt_name!r} has no earlier revision {revision} (earlier revisions: {known})"
        )
    return revision_rollback_plan(
        live, chosen[0], revision, environment=ws.connection.environment, project=ws.project.project
    )


@main.command("rollback")
@click.argument("run_id", required=False)
@click.option("--prompt", "prompt_name", metavar="NAME", help="Instead of a run: put this prompt back to...")
@click.option("--revision", type=int, metavar="N", help="...this server-side revision (see its /versions).")
@env_option
@var_option
@click.option(
    "--auto-approve", is_flag=True, envvar="RECONCILER_AUTO_APPROVE", help="Do not ask for confirmation (CI)."
)
@parallelism_option
@journal_option
@lock_timeout_option
@break_lock_option
@result_format_option
@color_option
def rollback_command(
    run_id: str | None,
    prompt_name: str | None,
    revision: int | None,
    env_name: str | None,
    auto_approve: bool,
    parallelism: int,
    journal_path: str | None,
    lock_timeout: float,
    break_lock: str | None,
    no_color: bool,
) -> None:
    """Undo what run RUN_ID changed (see `reconciler journal list`), with the same locking;
    or, with --prompt NAME --revision N, put a prompt back to an earlier server-side revision.

    A resource changed since is a conflict (exit 3), never overwritten.
    """
    if (run_id is None) == (prompt_name is None) or (prompt_name is None) != (revision is None):
        raise ConfigError("give a RUN_ID, or --prompt NAME with --revision N")
    ws = open_settings(env_name, journal=journal_path, variables=given_variables()).load()

    async def go() -> ApplyResult | None:
        with open_journal(ws, "rollback", lock_timeout, break_lock) as journal:
            async with connect(ws.connection, parallelism=parallelism, writes=True) as client:
                await record_lost_outcomes(ws, journal, client)
                return await roll_back(ws, journal, client)

    async def roll_back(ws: Workspace, journal: Journal, client: GatewayClient) -> ApplyResult | None:
        refused: list[str] = []
        if prompt_name is not None and revision is not None:
            the_plan = await revision_plan(ws, client, prompt_name, revision)
            what = f"prompt {prompt_name} to revision {revision}"
        else:
            records = journal.run(run_id or "")
            if not records:
                raise ConfigError(f"no run {run_id!r} in {ws.journal_path}; see `reconciler journal list`")
            the_plan, refused = rollback_plan(
                records, environment=ws.connection.environment, project=ws.project.project
            )
            what = f"run {run_id}"
        for reason in refused:
            note(f"Cannot roll back {reason}")
        if not wants_json():
            show_plan(ws, the_plan, "text", use_color(no_color))
        if not the_plan.has_changes:
            click.echo("Nothing to roll back.")
            return None
        confirm(auto_approve, f"Do you want to roll back {what}?")
        return await execute(ws, the_plan, client, journal, f"rollback {what}", "")

    result = run(go())
    if result is None:
        return
    report(result, "Rollback")
    raise SystemExit(result.exit_code)
