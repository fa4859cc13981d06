"""`reconciler validate`: every problem in the manifests, offline, in one run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from reconciler.cli import main
from reconciler.cli.options import (
    collections_deferred,
    env_option,
    format_option,
    given_variables,
    var_option,
)
from reconciler.client.connect import chosen_environment
from reconciler.errors import ManifestError, Problem
from reconciler.loader import load_project
from reconciler.rules import notes, validate_manifests
from reconciler.workspace import manifest_cache_dir, manifest_paths


def _escape_annotation(text: str) -> str:
    # GitHub workflow commands need %, CR and LF escaped in the message.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _print(problems: list[Problem], output_format: str) -> None:
    if output_format == "json":
        click.echo(
            json.dumps(
                [
                    {"file": p.file, "line": p.line, "col": p.col, "field": p.field, "message": p.message}
                    for p in problems
                ],
                indent=2,
            )
        )
    elif output_format == "github":
        for p in problems:
            message = f"{p.field}: {p.message}" if p.field else p.message
            click.echo(f"::error file={p.file},line={p.line},col={p.col}::{_escape_annotation(message)}")
    else:
        for p in problems:
            click.echo(str(p), err=True)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@env_option
@var_option
@format_option("text", "json", "github")
def validate(paths: tuple[str, ...], env_name: str | None, output_format: str) -> None:
    """Check manifests offline: YAML, schema, service rules, references, token budgets.

    Exit codes: 0 valid, 1 invalid (every problem is listed, as file:line:col: field: message).
    """
    try:
        project, found = load_project()
        _, environment = chosen_environment(project, env_name, os.environ)
        project_dir = found.parent if found else Path(".")
        targets = manifest_paths(project, project_dir, environment, paths)
        variables = {**(environment.variables if environment else {}), **given_variables()}
        cache = manifest_cache_dir(project_dir, os.environ)
        with collections_deferred():
            manifests = validate_manifests(targets, variables, cache_dir=cache)
    except ManifestError as exc:
        _print(exc.problems, output_format)
        if output_format == "text":
            click.echo(f"Error: {len(exc.problems)} problem(s) found.", err=True)
        raise SystemExit(1) from None
    # Notes are no errors: worth telling the author, never a reason to fail.
    for n in notes(manifests):
        if output_format == "github":
            click.echo(f"::notice file={n.file},line={n.line},col={n.col}::{_escape_annotation(n.message)}")
        elif output_format == "text":
            click.echo(str(n), err=True)
    if output_format == "json":
        click.echo("[]")
    else:
        click.echo(f"{len(manifests.manifests)} manifests valid.")
