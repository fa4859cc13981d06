"""Options shared by several commands, declared once so every command spells them the same.

Environment variables mirror options (``RECONCILER_ENV`` for ``--env``, and so on), as click's
``envvar`` gives them, so CI can configure a job without repeating flags.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from reconciler.models import ResourceKey

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class ResourceKeyType(click.ParamType):  # type: ignore[type-arg]  # generic in click >= 8.2 only
    """KIND/NAME on the command line: a usage error (exit 2) when it does not parse."""

    name = "KIND/NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> ResourceKey:
        if isinstance(value, ResourceKey):
            return value
        try:
            return ResourceKey.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


env_option = click.option(
    "--env",
    "env_name",
    envvar="RECONCILER_ENV",
    metavar="NAME",
    help="Environment of reconciler.yaml (default: embedded emulator).",
)
target_option = click.option(
    "--target",
    "targets",
    multiple=True,
    type=ResourceKeyType(),
    metavar="KIND/NAME",
    help="Only these resources and what they depend on (repeatable).",
)
exclude_option = click.option(
    "--exclude",
    "excludes",
    multiple=True,
    type=ResourceKeyType(),
    metavar="KIND/NAME",
    help="Leave these resources out (repeatable).",
)
parallelism_option = click.option(
    "--parallelism",
    type=click.IntRange(1, 64),
    default=10,
    envvar="RECONCILER_PARALLELISM",
    show_default=True,
    help="Requests in flight at once.",
)
color_option = click.option(
    "--no-color",
    is_flag=True,
    help="Never color the output (colors are used only on a terminal; NO_COLOR is honoured).",
)
journal_option = click.option(
    "--journal",
    "journal_path",
    envvar="RECONCILER_JOURNAL",
    metavar="PATH",
    help="Audit journal (default .reconciler/journal.jsonl).",
)


max_comments_option = click.option(
    "--max-comments",
    type=click.IntRange(1, 50),
    default=None,
    metavar="N",
    help="Markdown: at most N comment-sized parts; a larger report is summarised.",
)


lock_timeout_option = click.option(
    "--lock-timeout",
    type=click.FloatRange(0, 3600),
    default=0,
    envvar="RECONCILER_LOCK_TIMEOUT",
    metavar="SECONDS",
    help="Wait this long for another run to release the journal (default: do not wait).",
)


def format_option(*choices: str, default: str = "text") -> Callable[[F], F]:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(choices),
        default=default,
        show_default=True,
        help="Output format.",
    )


def use_color(no_color: bool) -> bool:
    # no-color.org: NO_COLOR set to any non-empty value turns colour off ("0" included).
    return not no_color and not os.environ.get("NO_COLOR") and sys.stdout.isatty()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one command's async body to completion."""
    return asyncio.run(coroutine)


def note(message: str) -> None:
    """A line for the person at the terminal (stderr), kept out of machine-readable stdout."""
    click.echo(message, err=True)
