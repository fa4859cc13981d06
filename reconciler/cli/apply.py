"""`reconciler apply` and `reconciler rollback`: the only commands that write to the live org."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from reconciler.apply import ApplyOptions, ApplyResult, Outcome, Status, apply_plan
from reconciler.cli import main
from reconciler.cli.options import (
    color_option,
    env_option,
    exclude_option,
    journal_option,
    note,
    parallelism_option,
    run,
    target_option,
    use_color,
)
from reconciler.cli.plan import show_plan
from reconciler.client.adapters import adapter_for
from reconciler.client.api import GatewayClient
from reconciler.client.connect import open_client
from reconciler.diff import desired_document, fingerprint
from reconciler.errors import ConfigError, StalePlanError
from reconciler.journal import Journal, detect_actor, detect_git_commit, write_step_summary
from reconciler.models import Kind, ResourceKey, key_of
from reconciler.plan import Action, Change, Plan
from reconciler.plan_json import read_plan_file
from reconciler.rollback import rollback_plan
from reconciler.workspace import Workspace, ignore_rules, make_live_plan, open_workspace, plan_options

SYMBOLS = {
    Status.APPLIED: "✓",
    Status.UNCHANGED: "=",
    Status.CONFLICT: "!",
    Status.FAILED: "✗",
    Status.SKIPPED: "-",
}


def load_saved_plan(ws: Workspace, path: Path) -> Plan:
    """A saved plan, refused when the manifests changed since it was made.

    The saved file holds sensitive fields only as hashes, so each change's body is taken again
    from the manifests (pinned by the digest) and checked to redact to what the plan showed.
    """
    saved = read_plan_file(path)
    if saved.manifests_digest != ws.manifests.digest:
        raise StalePlanError(
            f"{path} was made from manifests that have changed since "
            f"(digest {saved.manifests_digest[:12]} != {ws.manifests.digest[:12]}); "
            "run plan again"
        )
    by_key = {key_of(m.manifest): m.manifest for m in ws.manifests.manifests}
    ignore = ignore_rules(ws.project)
    changes = []
    for change in saved.changes:
        # Only what will be written is taken from the manifests (a no-op's after is the live body).
        if change.action in (Action.CREATE, Action.UPDATE) and change.key in by_key:
            after = desired_document(by_key[change.key], ws.project.project, ignore)
            shown = {"spec": ws.redactor.resource(change.key.kind, after["spec"]), "labels": after["labels"]}
            if fingerprint(shown) != fingerprint(change.after):
                raise StalePlanError(f"{path}: {change.key} no longer matches the plan; run plan again")
            change = replace(change, after=after)
        changes.append(change)
    return replace(saved, changes=tuple(changes))


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


def progress(outcome: Outcome) -> None:
    if outcome.change.action is Action.NO_OP:
        return
    symbol = SYMBOLS[outcome.status]
    note(
        f"  {symbol} {outcome.change.action.value:<8} {outcome.change.key}: {outcome.status.value}"
        + (f" ({outcome.message})" if outcome.message else "")
    )


def summary_line(result: ApplyResult) -> str:
    applied = [o for o in result.outcomes if o.status is Status.APPLIED]
    counts = {a: sum(1 for o in applied if o.change.action is a) for a in Action}
    return (
        f"Apply complete! Resources: {counts[Action.CREATE]} created, "
        f"{counts[Action.UPDATE] + counts[Action.ROLLBACK]} updated, {counts[Action.DELETE]} deleted; "
        f"{result.count(Status.CONFLICT)} conflict(s), {result.count(Status.FAILED)} failed, "
        f"{result.count(Status.SKIPPED)} skipped."
    )


async def execute(
    ws: Workspace, plan: Plan, client: GatewayClient, journal: Journal, command: str, plan_hash: str
) -> ApplyResult:
    options = ApplyOptions(
        redactor=ws.redactor,
        webhooks=ws.webhooks,
        actor=detect_actor(),
        git_commit=detect_git_commit(),
        command=command,
        on_outcome=progress,
        ignore=ignore_rules(ws.project),
    )
    return await apply_plan(plan, client, journal, options, plan_hash=plan_hash)


def report(result: ApplyResult) -> None:
    for outcome in result.outcomes:
        if outcome.status is Status.CONFLICT:
            note(f"Conflict: {outcome.message}")
    click.echo(summary_line(result))
    click.echo(f"Journal run {result.run_id}; journal head {result.journal_head}")
    write_step_summary(result.journal_head, summary_line(result))


def open_journal(ws: Workspace) -> Journal:
    journal = Journal(ws.journal_path)
    for torn in journal.set_aside:
        note(f"Warning: the journal's last line was torn ({torn}); it was set aside, not accepted.")
    return journal


@main.command("apply")
@click.argument("source", nargs=-1, type=click.Path())
@env_option
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
    no_color: bool,
) -> None:
    """Apply a saved plan (PLAN.json), or plan PATHS and apply after confirmation.

    Exit codes: 0 applied, 1 error, 3 conflict (something changed since the plan; nothing of
    theirs was overwritten).
    """
    plan_file = Path(source[0]) if len(source) == 1 and source[0].endswith(".json") else None
    ws = open_workspace(env_name, () if plan_file else source, journal=journal_path)
    note(f"Applying to {ws.connection.description}.")

    async def go() -> ApplyResult | None:
        async with open_client(ws.connection, parallelism=parallelism) as client:
            if plan_file is not None:
                the_plan = load_saved_plan(ws, plan_file)
            else:
                options = plan_options(ws, prune=prune, targets=targets, excludes=excludes)
                the_plan = await make_live_plan(ws, client, options)
                show_plan(ws, the_plan, "text", use_color(no_color))
            if not the_plan.has_changes:
                click.echo("No changes. Nothing to apply.")
                return None
            # A saved plan was reviewed when it was made (Terraform's habit): no second question.
            confirm(auto_approve or plan_file is not None, "Do you want to perform these actions?")
            journal = open_journal(ws)
            result = await execute(ws, the_plan, client, journal, "apply", the_plan.manifests_digest)
            if rollback_on_failure and result.count(Status.FAILED):
                note("A change failed for good: rolling back what this run changed (--rollback-on-failure).")
                undo, refused = rollback_plan(
                    journal.run(result.run_id), environment=the_plan.environment, project=the_plan.project
                )
                for reason in refused:
                    note(f"  cannot roll back {reason}")
                report(result)
                undone = await execute(ws, undo, client, journal, f"rollback {result.run_id}", "")
                report(undone)
                raise SystemExit(1)  # the run failed, however well the undo went
            return result

    result = run(go())
    if result is None:
        return
    report(result)
    raise SystemExit(result.exit_code)


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
    earlier = adapter_for(Kind.PROMPT).from_wire(chosen[0])
    before = {"spec": live.spec, "labels": live.labels}
    after = {"spec": earlier.spec, "labels": live.labels}
    change = Change(
        Action.ROLLBACK,
        live.key,
        before,
        after,
        None,
        f"back to server revision {revision}",
        live.etag,
        live.id,
    )
    return Plan(ws.connection.environment, ws.project.project, "", (change,))


@main.command("rollback")
@click.argument("run_id", required=False)
@click.option("--prompt", "prompt_name", metavar="NAME", help="Instead of a run: put this prompt back to...")
@click.option("--revision", type=int, metavar="N", help="...this server-side revision (see its /versions).")
@env_option
@click.option(
    "--auto-approve", is_flag=True, envvar="RECONCILER_AUTO_APPROVE", help="Do not ask for confirmation (CI)."
)
@parallelism_option
@journal_option
@color_option
def rollback_command(
    run_id: str | None,
    prompt_name: str | None,
    revision: int | None,
    env_name: str | None,
    auto_approve: bool,
    parallelism: int,
    journal_path: str | None,
    no_color: bool,
) -> None:
    """Undo what run RUN_ID changed (see `reconciler journal list`), with the same locking;
    or, with --prompt NAME --revision N, put a prompt back to an earlier server-side revision.

    A resource changed since is a conflict (exit 3), never overwritten.
    """
    if (run_id is None) == (prompt_name is None) or (prompt_name is None) != (revision is None):
        raise ConfigError("give a RUN_ID, or --prompt NAME with --revision N")
    ws = open_workspace(env_name, journal=journal_path)
    journal = open_journal(ws)

    async def go() -> ApplyResult | None:
        async with open_client(ws.connection, parallelism=parallelism) as client:
            refused: list[str] = []
            if prompt_name is not None and revision is not None:
                the_plan = await revision_plan(ws, client, prompt_name, revision)
                what = f"prompt {prompt_name} to revision {revision}"
            else:
                records = journal.run(run_id or "")
                if not records:
                    raise ConfigError(
                        f"no run {run_id!r} in {ws.journal_path}; see `reconciler journal list`"
                    )
                the_plan, refused = rollback_plan(
                    records, environment=ws.connection.environment, project=ws.project.project
                )
                what = f"run {run_id}"
            for reason in refused:
                note(f"Cannot roll back {reason}")
            show_plan(ws, the_plan, "text", use_color(no_color))
            if not the_plan.has_changes:
                click.echo("Nothing to roll back.")
                return None
            confirm(auto_approve, f"Do you want to roll back {what}?")
            return await execute(ws, the_plan, client, journal, f"rollback {what}", "")

    result = run(go())
    if result is None:
        return
    report(result)
    raise SystemExit(result.exit_code)
