"""Options shared by several commands, declared once so every command spells them the same.

Environment variables mirror options (``RECONCILER_ENV`` for ``--env``, and so on), as click's
``envvar`` gives them, so CI can configure a job without repeating flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import click.shell_completion

from reconciler.errors import ReconcilerError
from reconciler.loader import collect_manifests, load_project
from reconciler.models import ResourceKey, key_of

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class ResourceKeyType(click.ParamType):  # type: ignore[type-arg]  # generic in click >= 8.2 only
    """KIND/NAME on the command line: a usage error (exit 2) when it does not parse."""

    name = "KIND/NAME"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[click.shell_completion.CompletionItem]:
        """KIND/NAME of every manifest the project loads (best effort: nothing on a problem)."""
        return [
            click.shell_completion.CompletionItem(k) for k in _manifest_keys() if k.startswith(incomplete)
        ]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> ResourceKey:
        if isinstance(value, ResourceKey):
            return value
        try:
            return ResourceKey.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _environment_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Completion: the environments reconciler.yaml defines."""
    try:
        project, _ = load_project()
    except ReconcilerError:
        return []
    return [
        click.shell_completion.CompletionItem(n)
        for n in sorted(project.environments)
        if n.startswith(incomplete)
    ]


def _manifest_keys() -> list[str]:
    try:
        project, found = load_project()
        root = found.parent if found else Path(".")
        loaded, _ = collect_manifests([root / p for p in project.manifests])
    except ReconcilerError:
        return []
    return sorted(str(key_of(m.manifest)) for m in loaded.manifests)


env_option = click.option(
    "--env",
    "env_name",
    envvar="RECONCILER_ENV",
    metavar="NAME",
    shell_complete=_environment_names,
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
    metavar="PATH|git+URL#BRANCH",
    help="Audit journal: a file (default .reconciler/journal.jsonl) or a git branch (one file per "
    "environment).",
)


_VARIABLES = "reconciler.variables"


def _variable(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> None:
    out: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.isidentifier():
            raise click.BadParameter(f"expected NAME=VALUE, got {value!r}", ctx, param)
        out[name] = text
    ctx.meta[_VARIABLES] = out


var_option = click.option(
    "--var",
    multiple=True,
    metavar="NAME=VALUE",
    expose_value=False,
    callback=_variable,
    help="A ${NAME} for the manifests (repeatable); overrides the environment's variables.",
)


def given_variables() -> dict[str, str]:
    """The --var values of the running command (empty outside one)."""
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get(_VARIABLES, {})) if ctx is not None else {}


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
    # The result travels in a box, not as the main task's result: CPython 3.11's asyncio.run
    # formats the finished task, result included, when it restores the SIGINT handler, and the
    # repr of a whole plan cost 0.4 s and 50 MB at 10k resources.
    box: list[T] = []

    async def main() -> None:
        box.append(await coroutine)

    asyncio.run(main())
    return box[0]


@contextlib.contextmanager
def collections_deferred() -> Iterator[None]:
    """No cyclic collections while a command builds its large, long-lived values (manifests,
    live state, the plan), and what was built frozen out of collection at the end, as the imports
    are (see ``reconciler.cli``). A young collection walks every value built since the last one:
    pauses of 80-90 ms, ~0.13 s of a warm plan of 10,000, to find almost nothing: building makes
    ~10,000 cyclic objects at 20,000 resources (HTTP bookkeeping; each response's own cycle is
    broken in ``client.http``, or every page's body would wait here: +30 MB at 20,000). The
    collector is back on, as it was, for what follows (apply's writes run with it)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


QUIET = "reconciler.quiet"
_JSON = "reconciler.json"


def _output(ctx: click.Context, param: click.Parameter, value: str) -> None:
    ctx.meta[_JSON] = value == "json"


result_format_option = click.option(
    "--format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    expose_value=False,
    callback=_output,
    help="How the result is printed: text, or one JSON object with every change's outcome.",
)


def wants_json() -> bool:
    """Whether the running command prints its result as JSON (--format json)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(_JSON))


def is_quiet() -> bool:
    """Whether --quiet was given to the running command."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().meta.get(QUIET))


def note(message: str) -> None:
    """A line for the person at the terminal (stderr), kept out of machine-readable stdout;
    silent with --quiet."""
    if not is_quiet():
        click.echo(message, err=True)
