"""`reconciler emulator serve`: run the bundled LLM Gateway emulator on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import click

from reconciler.cli import main


@main.group()
def emulator() -> None:
    """The bundled Genesys Cloud LLM Gateway emulator (see docs/API.md)."""


def _fail_rule(value: str) -> tuple[int, float]:
    status, _, probability = value.partition(":")
    try:
        code, p = int(status), float(probability)
    except ValueError:
        raise click.BadParameter(f"expected STATUS:PROBABILITY like 503:0.1, got {value!r}") from None
    if code not in (429, 500, 502, 503, 504) or not 0 <= p <= 1:
        raise click.BadParameter(f"status must be 429/500/502/503/504 and probability in [0,1]: {value!r}")
    return code, p


@emulator.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--db", default=".reconciler/emulator.db", show_default=True, help="SQLite file, or :memory:.")
@click.option("--fixtures", type=click.Path(file_okay=False, path_type=Path), help="Folder of fixture JSON.")
@click.option(
    "--rate-limit", "rate_limit", default=300, show_default=True, type=int, help="Requests per minute."
)
@click.option("--latency-ms", default=0.0, type=float)
@click.option("--jitter-ms", default=0.0, type=float)
@click.option("--fail", "fail", multiple=True, help="STATUS:PROBABILITY, e.g. 503:0.1 (repeatable).")
@click.option("--drop", default=0.0, type=click.FloatRange(0, 1), help="Probability of a lost response.")
@click.option("--seed", type=int, help="Seed for reproducible faults.")
@click.option("--lax", is_flag=True, help="Allow updates without If-Match.")
@click.option(
    "--real-shapes-only",
    is_flag=True,
    help="Serve the real Genesys Cloud endpoints (flows, conversations, the analytics details "
    "query) with the platform's fields only, without the LLM Gateway documents' variants: what a "
    "real org answers (see docs/API.md).",
)
@click.option(
    "--admin-token",
    envvar="RECONCILER_EMULATOR_ADMIN_TOKEN",
    help="Token /__emulator/* requires (Authorization: Bearer ...). Generated and printed when "
    "--host is not loopback; without it on loopback, the admin endpoints are open.",
)
def serve(
    host: str,
    port: int,
    db: str,
    fixtures: Path | None,
    rate_limit: int,
    latency_ms: float,
    jitter_ms: float,
    fail: tuple[str, ...],
    drop: float,
    seed: int | None,
    lax: bool,
    real_shapes_only: bool,
    admin_token: str | None,
) -> None:
    """Serve the emulator until interrupted."""
    from reconciler.emulator.config import DEFAULT_FIXTURES, EmulatorConfig, Faults
    from reconciler.emulator.server import is_loopback, make_server

    started = time.perf_counter()
    if db != ":memory:":
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    faults = Faults(
        latency_ms=latency_ms, jitter_ms=jitter_ms, fail=dict(_fail_rule(f) for f in fail), drop=drop
    )
    config = EmulatorConfig(
        db=db,
        fixtures=fixtures or DEFAULT_FIXTURES,
        rate_limit_per_minute=rate_limit,
        seed=seed,
        lax=lax,
        real_shapes_only=real_shapes_only,
        faults=faults,
        admin_token=admin_token,
    )
    server = make_server(config, host, port)
    if not is_loopback(host):
        click.echo(
            f"WARNING: listening on {host}, beyond loopback: anyone who can reach this port can use "
            "the emulator's well-known client credentials. Bind 127.0.0.1 unless you mean it.",
            err=True,
        )
    click.echo(f"LLM Gateway emulator on http://{host}:{port} (state: {db})")
    if real_shapes_only:
        click.echo("  real platform endpoints serve the platform's shapes only (no documents' variants)")
    click.echo("  client id: emulator-client   client secret: emulator-secret   (all scopes)")
    click.echo(
        f"  export GENESYS_BASE_URL=http://{host}:{port} GENESYS_CLIENT_ID=emulator-client "
        "GENESYS_CLIENT_SECRET=emulator-secret"
    )
    if admin_token is None and config.admin_token is not None:  # generated: the only way to learn it
        click.echo(f"  admin token (for /__emulator/*): {config.admin_token}")
    elif admin_token is not None:
        click.echo("  admin endpoints need the admin token you gave")
    click.echo(f"  ready in {time.perf_counter() - started:.2f}s; Ctrl-C to stop")
    server.run()
