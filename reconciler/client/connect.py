"""Which org a command talks to, and the client that reaches it.

Resolution order, the same for every command (kubectl's habit: explicit beats ambient):
1. ``--env NAME`` or ``RECONCILER_ENV`` picks an environment of reconciler.yaml;
2. otherwise ``GENESYS_BASE_URL`` or ``GENESYS_REGION`` with ``GENESYS_CLIENT_ID``/``_SECRET``;
3. otherwise the embedded emulator, in-process, with its state in ``.reconciler/`` so that
   ``apply`` then ``plan`` shows no changes (with the variables of the project's embedded
   environment, if it defines one).
Secrets are read from the environment variables the project names, never from files.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from reconciler.client.api import READ_SCOPES, WRITE_SCOPES, GatewayClient
from reconciler.client.http import Credentials, HttpSession, RateLimiter
from reconciler.errors import ConfigError
from reconciler.models import REGIONS, Environment, ProjectConfig

EMBEDDED_CLIENT = Credentials("emulator-client", "emulator-secret")
EMBEDDED_STATE = Path(".reconciler")


@dataclass(frozen=True)
class Connection:
    """Where and as whom to connect. ``embedded_db`` set means the in-process emulator."""

    environment: str
    base_url: str
    login_url: str
    credentials: Credentials
    variables: Mapping[str, str]
    embedded_db: Path | None = None

    @property
    def description(self) -> str:
        if self.embedded_db is not None:
            return f"embedded emulator (state in {self.embedded_db.parent}/)"
        return f"{self.environment or 'environment variables'} at {self.base_url}"


def _urls(region: str | None, base_url: str | None, login_url: str | None = None) -> tuple[str, str]:
    """The API and login URLs: a region's (api.<domain>, login.<domain>), or a base URL whose
    tokens come from ``login_url`` when given (real orgs log in at login.<domain>), else from
    the base URL itself (the emulator)."""
    if base_url:
        return base_url.rstrip("/"), (login_url or base_url).rstrip("/")
    if region not in REGIONS:
        raise ConfigError(f"unknown region {region!r}; known regions: {', '.join(sorted(REGIONS))}")
    domain = REGIONS[region]
    return f"https://api.{domain}", f"https://login.{domain}"


def _credentials(id_env: str, secret_env: str, environ: Mapping[str, str], where: str) -> Credentials:
    missing = [name for name in (id_env, secret_env) if not environ.get(name)]
    if missing:
        raise ConfigError(f"{where}: set the environment variable(s) {', '.join(missing)}")
    return Credentials(environ[id_env], environ[secret_env])


def embedded(state_dir: Path = EMBEDDED_STATE, environment: str = "") -> Connection:
    return Connection(
        environment,
        "http://embedded.emulator",
        "http://embedded.emulator",
        EMBEDDED_CLIENT,
        {},
        state_dir / "emulator.db",
    )


def chosen_environment(
    project: ProjectConfig, env_name: str | None, environ: Mapping[str, str]
) -> tuple[str, Environment | None]:
    """The environment a command works on, by name: --env, else RECONCILER_ENV, else none when
    GENESYS_BASE_URL / GENESYS_REGION select an org, else the project's embedded environment.
    ConfigError for a name reconciler.yaml does not define."""
    name = env_name or environ.get("RECONCILER_ENV") or ""
    if name:
        env = project.environments.get(name)
        if env is None:
            known = ", ".join(sorted(project.environments)) or "none"
            raise ConfigError(f"unknown environment {name!r} (reconciler.yaml defines: {known})")
        return name, env
    if environ.get("GENESYS_BASE_URL") or environ.get("GENESYS_REGION"):
        return "", None
    fallback = default_environment(project)
    return (fallback, project.environments[fallback]) if fallback else ("", None)


def resolve(
    project: ProjectConfig,
    env_name: str | None,
    environ: Mapping[str, str],
    project_dir: Path = Path("."),
) -> Connection:
    """The connection for this run; ConfigError names what is missing. The embedded emulator
    keeps its state in the project's .reconciler/ (wherever the command was started)."""
    name, env = chosen_environment(project, env_name, environ)
    if env is not None:
        if env.embedded:
            return replace(embedded(project_dir / EMBEDDED_STATE), environment=name, variables=env.variables)
        base_url, login_url = _urls(env.region, env.base_url, env.login_url)
        creds = _credentials(
            env.credentials.client_id_env, env.credentials.client_secret_env, environ, f"environment {name!r}"
        )
        return Connection(name, base_url, login_url, creds, env.variables)
    if environ.get("GENESYS_BASE_URL") or environ.get("GENESYS_REGION"):
        base_url, login_url = _urls(
            environ.get("GENESYS_REGION"), environ.get("GENESYS_BASE_URL"), environ.get("GENESYS_LOGIN_URL")
        )
        creds = _credentials("GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET", environ, "GENESYS_BASE_URL is set")
        return Connection("", base_url, login_url, creds, {})
    return embedded(project_dir / EMBEDDED_STATE)


def default_environment(project: ProjectConfig) -> str | None:
    """With nothing chosen, the project's embedded environment (if it has one) is the default,
    so its variables apply and `reconciler plan` works on a fresh clone with no flags."""
    embedded_envs = sorted(name for name, env in project.environments.items() if env.embedded)
    return embedded_envs[0] if embedded_envs else None


@asynccontextmanager
async def open_client(
    connection: Connection,
    *,
    parallelism: int = 10,
    transport: httpx.AsyncBaseTransport | None = None,
    seed: int | None = None,
    writes: bool = False,
) -> AsyncIterator[GatewayClient]:
    """A client for the connection, closed on exit. ``transport`` is the seam: the embedded
    emulator is passed in by the caller (the client never imports the service it talks to)."""
    if transport is None and connection.embedded_db is not None:
        raise ConfigError("the embedded emulator needs its transport: open the client with workspace.connect")
    limits = httpx.Limits(max_connections=max(parallelism, 4), max_keepalive_connections=max(parallelism, 4))
    async with httpx.AsyncClient(
        base_url=connection.base_url,
        transport=transport,
        limits=limits,
        timeout=httpx.Timeout(30.0, connect=10.0),
    ) as http:
        session = HttpSession(
            http,
            connection.credentials,
            login_url=connection.login_url,
            limiter=RateLimiter(),
            rng=random.Random(seed),
            scopes=WRITE_SCOPES if writes else READ_SCOPES,
        )
        yield GatewayClient(session, parallelism=parallelism)
