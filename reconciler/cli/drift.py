"""`reconciler drift`: detect-only comparison of the live org with git. Never writes."""

from __future__ import annotations

import click

from reconciler import drift as drift_report
from reconciler.cli import main
from reconciler.cli.options import (
    collections_deferred,
    env_option,
    format_option,
    given_variables,
    max_comments_option,
    note,
    parallelism_option,
    run,
    var_option,
)
from reconciler.plan import make_plan
from reconciler.workspace import connect, load_while_listing, open_settings, plan_options


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@env_option
@var_option
@format_option("text", "json", "markdown")
@max_comments_option
@parallelism_option
def drift(
    paths: tuple[str, ...],
    env_name: str | None,
    output_format: str,
    max_comments: int | None,
    parallelism: int,
) -> None:
    """Report what differs live from git: changed outside git, missing live, unmanaged extra.

    Exit codes: 0 no drift, 2 drift, 1 error.
    """
    settings = open_settings(env_name, paths, variables=given_variables())
    note(f"Checking drift against {settings.connection.description}.")
    options = plan_options(settings, prune=True)

    async def fetch() -> drift_report.DriftReport:
        async with connect(settings.connection, parallelism=parallelism) as client:
            ws, listing = await load_while_listing(settings, client)
            live = await listing
        desired = [m.manifest for m in ws.manifests.manifests]
        the_plan = make_plan(desired, live, options, ws.manifests.digest)
        return drift_report.classify(the_plan, live)

    with collections_deferred():
        report = run(fetch())
    if output_format == "markdown":
        text = drift_report.render_markdown(report, max_parts=max_comments)
    elif output_format == "json":
        text = drift_report.render_json(report)
    else:
        text = drift_report.render_text(report)
    click.echo(settings.redactor.text(text), nl=False)
    if report:
        raise SystemExit(2)
