"""`reconciler schema`: write the JSON Schemas editors use to check manifests as you type."""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli import main
from reconciler.schemas import schema_files


@main.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas"),
    show_default=True,
    help="Folder to write the schemas into.",
)
def schema(out_dir: Path) -> None:
    """Write JSON Schemas for FunctionDefinition, Prompt, ContextPolicy and reconciler.yaml."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in schema_files().items():
        (out_dir / name).write_text(text, encoding="utf-8")
        click.echo(f"wrote {out_dir / name}")
