"""`reconciler metrics`: how live prompts perform, per prompt and per variant, over a recent window.

Numbers come from the analytics query (every page, through the run's one rate limiter) and are
aggregated by ``reconciler.metrics``. Also home of the DURATION option type that `apply
--health-gate` shares.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from reconciler.cli import main
from reconciler.cli.options import env_option, format_option, given_variables, run, var_option
from reconciler.client.api import GatewayClient
from reconciler.errors import UsageError
from reconciler.metrics import (
    PromptMetrics,
    Stats,
    calls_from_records,
    format_duration,
    parse_duration,
    prompt_metrics,
)
from reconciler.models import Kind, Prompt
from reconciler.workspace import connect, open_settings


class DurationType(click.ParamType):  # type: ignore[type-arg]  # generic in click >= 8.2 only
    """30s, 10m, 1h30m on the command line, as seconds; a usage error (exit 2) otherwise."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


async def measure(
    client: GatewayClient, names: tuple[str, ...], start: datetime, end: datetime
) -> list[PromptMetrics]:
    live = {r.key.name: r.id for r in await client.list_kind(Kind.PROMPT)}
    missing = [n for n in names if n not in live]
    if missing:
        raise UsageError(f"no live prompt named {', '.join(map(repr, missing))}")
    calls = calls_from_records(await client.conversation_details([live[n] for n in names], start, end))
    return [prompt_metrics(n, live[n], calls) for n in names]


def _cell(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if kind == "rate" else f"{value:.0f}"


def _row(prompt: str, variant: str, s: Stats) -> str:
    return (
        f"{prompt:<28} {variant:<14} {s.calls:>7} {_cell(s.success_rate, 'rate'):>8} "
        f"{_cell(s.mean_latency_ms, 'ms'):>8} {_cell(s.p95_latency_ms, 'ms'):>8} "
        f"{_cell(s.tokens_per_call, 'n'):>11}"
    )


def text_report(found: list[PromptMetrics], start: datetime, end: datetime, since_s: float) -> str:
    lines = [
        f"Prompt metrics over the last {format_duration(since_s)} "
        f"({start.isoformat(timespec='seconds')} .. {end.isoformat(timespec='seconds')})",
        f"{'PROMPT':<28} {'VARIANT':<14} {'CALLS':>7} {'SUCCESS':>8} {'MEAN MS':>8} {'P95 MS':>8} "
        f"{'TOKENS/CALL':>11}",
    ]
    for m in found:
        lines.append(_row(m.name, "(all)", m.overall))
        lines.extend(_row("", v, s) for v, s in sorted(m.variants.items()))
    return "\n".join(lines)


@main.command("metrics")
@click.argument("prompts", nargs=-1, metavar="[PROMPT]...")
@env_option
@var_option
@click.option(
    "--since",
    "since_s",
    type=DURATION,
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="How far back to look (e.g. 15m, 1h, 24h).",
)
@format_option("text", "json")
def metrics_command(
    prompts: tuple[str, ...], env_name: str | None, since_s: float, output_format: str
) -> None:
    """Calls, success rate, mean and p95 latency and tokens per call of live PROMPTs (default:
    every prompt of the manifests), per prompt and per variant, over the last --since."""
    if since_s <= 0:
        raise UsageError("--since must be longer than 0s")
    ws = open_settings(env_name, variables=given_variables()).load()
    names = prompts or tuple(
        m.manifest.metadata.name for m in ws.manifests.manifests if isinstance(m.manifest, Prompt)
    )
    end = datetime.now(UTC)
    start = end - timedelta(seconds=since_s)

    async def go() -> list[PromptMetrics]:
        async with connect(ws.connection) as client:
            return await measure(client, tuple(dict.fromkeys(names)), start, end)

    found = run(go())
    if output_format == "json":
        body = {
            "window": {
                "start": start.isoformat(timespec="milliseconds"),
                "end": end.isoformat(timespec="milliseconds"),
                "seconds": since_s,
            },
            "prompts": [m.as_dict() for m in found],
        }
        click.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    click.echo(text_report(found, start, end, since_s))
