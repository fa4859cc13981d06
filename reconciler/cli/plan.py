"""`reconciler plan`: what apply would change, and nothing when nothing would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from reconciler.cli import main
from reconciler.cli.options import (
    collections_deferred,
    color_option,
    env_option,
    exclude_option,
    format_option,
    given_variables,
    max_comments_option,
    note,
    parallelism_option,
    run,
    target_option,
    use_color,
    var_option,
)
from reconciler.client.api import GatewayClient
from reconciler.errors import ApiError, ConfigError
from reconciler.metrics import calls_from_records, format_duration, prompt_metrics, traffic_line
from reconciler.models import Kind, ResourceKey
from reconciler.plan import Action, Plan, PlanOptions
from reconciler.plan_json import PlanOrigin, read_plan_file, saved_plan_text
from reconciler.previews import plan_previews
from reconciler.render import PART_SEPARATOR, render_json, render_markdown, render_text
from reconciler.workspace import (
    Workspace,
    connect,
    load_while_listing,
    make_live_plan,
    open_settings,
    plan_options,
)


def show_plan(
    ws: Workspace,
    plan: Plan,
    output_format: str,
    color: bool,
    max_parts: int | None = None,
    traffic: Mapping[ResourceKey, str] | None = None,
) -> None:
    """Print a plan in the chosen format, secrets and sensitive fields redacted."""
    redact = ws.redactor.resource
    if output_format == "json":
        click.echo(ws.redactor.text(render_json(plan, redact=redact)))
    elif output_format == "markdown":
        desired = [m.manifest for m in ws.manifests.manifests]
        roots = sorted({Path(m.source.file).resolve().parent for m in ws.manifests.manifests})
        roots = [p for r in roots for p in (r, *r.parents)]
        previews = plan_previews(plan, desired, roots)
        chunks = render_markdown(plan, previews=previews, redact=redact, max_parts=max_parts, traffic=traffic)
        click.echo(ws.redactor.text(PART_SEPARATOR.join(chunks)))
    else:
        click.echo(ws.redactor.text(render_text(plan, color=color, redact=redact)), nl=False)


TRAFFIC_WINDOW_S = 3600.0


async def prompt_traffic(client: GatewayClient, plan: Plan) -> dict[ResourceKey, str]:
    """For each live prompt the plan changes, its traffic over the last hour as one line. A
    preview aid: if the analytics query fails, the plan says so instead of failing."""
    changed = {
        c.live_id: c.key
        for c in plan.changes
        if c.key.kind is Kind.PROMPT and c.action in (Action.UPDATE, Action.DELETE) and c.live_id
    }
    if not changed:
        return {}
    end = datetime.now(UTC)
    start = end - timedelta(seconds=TRAFFIC_WINDOW_S)
    try:
        calls = calls_from_records(await client.conversation_details(sorted(changed), start, end))
    except ApiError as exc:
        return {key: f"unavailable ({exc.status} {exc.code})" for key in changed.values()}
    window = format_duration(TRAFFIC_WINDOW_S)
    return {
        key: traffic_line(prompt_metrics(key.name, live_id, calls), window)
        for live_id, key in changed.items()
    }


def save_plan(ws: Workspace, plan: Plan, options: PlanOptions, org_id: str, path: Path) -> None:
    """Write the plan apply will execute, secrets and sensitive fields redacted everywhere in it
    (bodies, field diffs, template diffs), with what it was made from: apply makes it again from
    those inputs and executes only what both agree on (see promise.py)."""
    document = json.loads(ws.redactor.text(render_json(plan, redact=ws.redactor.resource)))
    origin = PlanOrigin(
        paths=ws.relative_manifest_paths(),
        targets=tuple(sorted(str(t) for t in options.targets)),
        excludes=tuple(sorted(str(e) for e in options.excludes)),
        prune=options.prune,
        base_url=ws.connection.base_url,
        org_id=org_id,
    )
    try:
        path.write_text(saved_plan_text(document, origin, ws.plan_key), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the plan to {path}: {exc.strerror or exc}") from None


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@env_option
@var_option
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan (JSON).")
@format_option("text", "json", "markdown")
@max_comments_option
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes.")
@target_option
@exclude_option
@click.option("--prune", is_flag=True, help="Delete live resources managed by this project but not in git.")
@parallelism_option
@color_option
def plan(
    paths: tuple[str, ...],
    env_name: str | None,
    out: Path | None,
    output_format: str,
    max_comments: int | None,
    detailed_exitcode: bool,
    targets: tuple[ResourceKey, ...],
    excludes: tuple[ResourceKey, ...],
    prune: bool,
    parallelism: int,
    no_color: bool,
) -> None:
    """Show what apply would change in the live org.

    Exit codes: 0 no changes (or changes without --detailed-exitcode), 2 changes with
    --detailed-exitcode, 1 error.
    """
    settings = open_settings(env_name, paths, variables=given_variables())
    note(f"Planning against {settings.connection.description}.")
    options = plan_options(settings, prune=prune, targets=targets, excludes=excludes)

    async def fetch() -> tuple[Workspace, Plan, str, dict[ResourceKey, str]]:
        async with connect(settings.connection, parallelism=parallelism) as client:
            ws, listing = await load_while_listing(settings, client)
            org = asyncio.ensure_future(client.organization_id()) if out is not None else None
            made = await make_live_plan(ws, client, options, listing)
            traffic = await prompt_traffic(client, made) if output_format == "markdown" else {}
            return ws, made, (await org if org is not None else ""), traffic

    with collections_deferred():
        ws, result, org_id, traffic = run(fetch())
    show_plan(ws, result, output_format, use_color(no_color), max_comments, traffic)
    if out is not None:
        save_plan(ws, result, options, org_id, out)
        note(f"Saved the plan to {out}. Apply it with: reconciler apply {out}")
    if detailed_exitcode and result.has_changes:
        raise SystemExit(2)


@main.command()
@click.argument("plan_file", type=click.Path(dir_okay=False, path_type=Path))
@format_option("text", "json", "markdown")
@max_comments_option
@color_option
def show(plan_file: Path, output_format: str, max_comments: int | None, no_color: bool) -> None:
    """Show a saved plan (as `terraform show` does), offline: no org, no credentials.

    A saved plan holds sensitive fields only as hashes, so what it shows is what was reviewed.
    """
    saved = read_plan_file(plan_file).plan
    if output_format == "json":
        click.echo(render_json(saved))
    elif output_format == "markdown":
        click.echo(PART_SEPARATOR.join(render_markdown(saved, max_parts=max_comments)))
    else:
        click.echo(render_text(saved, color=use_color(no_color)), nl=False)
