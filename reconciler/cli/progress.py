"""What a person watching a run sees: on a terminal, one live line (done/total, elapsed, time
left, and when the service's rate limit holds every request); elsewhere (CI logs, pipes), one
line per change, as before. Conflicts and failures are always printed as lines of their own.

rich draws the live line: it is the ecosystem's choice for this, handles terminal width and
redraws, and falls back to plain output when stderr is not a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from reconciler.apply import Outcome, Status
from reconciler.client.http import RateLimiter
from reconciler.plan import Action

SYMBOLS = {
    Status.APPLIED: "✓",
    Status.UNCHANGED: "=",
    Status.CONFLICT: "!",
    Status.FAILED: "✗",
    Status.SKIPPED: "-",
}


def outcome_line(outcome: Outcome) -> str:
    symbol = SYMBOLS[outcome.status]
    return f"  {symbol} {outcome.change.action.value:<8} {outcome.change.key}: {outcome.status.value}" + (
        f" ({outcome.message})" if outcome.message else ""
    )


class _RateLimitColumn(ProgressColumn):
    """'waiting on the rate limit (12 s)' while the service's limit holds every request."""

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    def render(self, task: Task) -> Text:
        waiting = self.limiter.paused_for()
        return Text(f"waiting on the rate limit ({waiting:.0f} s)" if waiting >= 0.5 else "", style="yellow")


class RunProgress:
    """Reports each change's outcome: a live line on a terminal, lines otherwise."""

    def __init__(self, total: int, limiter: RateLimiter, *, live: bool) -> None:
        self.total, self.limiter, self.live = total, limiter, live
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    @staticmethod
    def wanted(quiet: bool) -> bool:
        """A live line only for a person at a terminal (never in CI logs or pipes)."""
        return not quiet and sys.stderr.isatty()

    def __enter__(self) -> RunProgress:
        if self.live and self.total:
            self._progress = Progress(
                TextColumn("Applying"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("elapsed"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                _RateLimitColumn(self.limiter),
                console=Console(file=sys.stderr),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("apply", total=self.total)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def outcome(self, outcome: Outcome, print_line: Callable[[str], None]) -> None:
        """Count ``outcome``; print it as a line where a live line does not stand for it."""
        if outcome.change.action is Action.NO_OP:
            return
        if self._progress is None or self._task is None:
            print_line(outcome_line(outcome))
            return
        self._progress.advance(self._task)
        if outcome.status in (Status.CONFLICT, Status.FAILED):
            self._progress.console.print(outcome_line(outcome), highlight=False, markup=False)
