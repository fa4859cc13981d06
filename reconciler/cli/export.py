"""`reconciler export`: manifests from a live org, one file per resource (adoption)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from reconciler.cli import main
from reconciler.cli.apply import detect_actor, detect_git_commit
from reconciler.cli.options import env_option, journal_option, note, parallelism_option, run
from reconciler.client.connect import resolve
from reconciler.export import export_files
from reconciler.journal import RecordType
from reconciler.loader import load_project
from reconciler.models import Kind, LiveResource
from reconciler.workspace import connect, journal_store


@main.command()
@env_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("exported"),
    show_default=True,
    help="Folder to write manifests into.",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice([k.value for k in Kind]),
    help="Only these kinds (repeatable; default all).",
)
@click.option(
    "--adopt", is_flag=True, help="Manage unlabelled resources: the next apply labels them as this project's."
)
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@parallelism_option
@journal_option
def export(
    env_name: str | None,
    out_dir: Path,
    kinds: tuple[str, ...],
    adopt: bool,
    force: bool,
    parallelism: int,
    journal_path: str | None,
) -> None:
    """Write manifests from the live org; planning them against the same org shows no changes.

    Journaled like every operation on an org: who exported what, from which environment."""
    project, found = load_project()
    project_dir = found.parent if found else Path(".")
    connection = resolve(project, env_name, os.environ, project_dir)
    note(f"Exporting from {connection.description}.")
    chosen = tuple(Kind(k) for k in kinds) or tuple(Kind)

    async def fetch() -> list[LiveResource]:
        async with connect(connection, parallelism=parallelism) as client:
            return await client.live_state(chosen)

    # The schemas folder as an editor sees it from <out>/<kind folder>/, wherever --out points.
    schemas = Path(os.path.relpath((project_dir / "schemas").resolve(), (out_dir / "kind").resolve()))
    files = export_files(run(fetch()), project.project, adopt=adopt, kinds=chosen, schemas=schemas.as_posix())
    existing = [f.path for f in files if (out_dir / f.path).exists()]
    if existing and not force:
        raise click.ClickException(
            f"{len(existing)} file(s) already exist under {out_dir} "
            f"(e.g. {existing[0]}); pass --force to overwrite"
        )
    for file in files:
        target = out_dir / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file.text, encoding="utf-8")
    env = project.environments.get(connection.environment)
    store = journal_store(project, project_dir, env, connection.environment, journal_path, os.environ)
    actor = detect_actor()
    with store.writer(actor=actor, command="export", environment=connection.environment, say=note) as journal:
        run_id = journal.start_run(
            actor=actor,
            environment=connection.environment,
            plan_hash="",
            git_commit=detect_git_commit(),
            command="export",
        )
        exported = {"exported": len(files), "kinds": [k.value for k in chosen], "out": str(out_dir)}
        journal.append(
            run_id, RecordType.RUN_END, {"summary": {"counts": {"exported": len(files)}, **exported}}
        )
    click.echo(f"Exported {len(files)} resource(s) to {out_dir}/ (journal run {run_id}).")
