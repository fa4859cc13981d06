"""What a command works on: the project, its chosen org, its manifests, and the live state.

This is the glue between the pure planner and the edges: it reads reconciler.yaml and the
environment, loads and checks the manifests (all problems at once, before any request), and
fetches live state and the live-org context concurrently to make a ``Plan``. Commands (plan,
apply, drift, export, rollback) share it so they all see the org the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx

from reconciler.client.api import GatewayClient
from reconciler.client.connect import Connection, open_client, resolve
from reconciler.errors import ConfigError, LiveCheckError
from reconciler.journal import JournalStore, is_git_location
from reconciler.journal_git import open_store
from reconciler.loader import ManifestSet, Steps, finish, load_project
from reconciler.models import ContextPolicy, Environment, LiveResource, ProjectConfig, Prompt, ResourceKey
from reconciler.notify import WebhookTarget
from reconciler.plan import IgnoreRules, Plan, PlanOptions, make_plan
from reconciler.redact import Redactor, from_project
from reconciler.rules import check_live, validate_manifests_steps

T = TypeVar("T")


def user_cache_dir(purpose: str, project_dir: Path, environ: Mapping[str, str]) -> Path:
    """A project's folder for ``purpose`` in the user's cache, never in the checkout: anything in
    the checkout can come from a pull request, and a forged cache entry would plan manifests
    other than git's, or a forged journal working copy publish records no run wrote."""
    root = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reconciler" / purpose
    return root / hashlib.sha256(str(project_dir.resolve()).encode()).hexdigest()[:16]


def manifest_cache_dir(project_dir: Path, environ: Mapping[str, str]) -> Path:
    """Per-file results of loading and checking manifests (see ``user_cache_dir``)."""
    return user_cache_dir("manifests", project_dir, environ)


def journal_cache_dir(project_dir: Path, environ: Mapping[str, str]) -> Path:
    """Working copies of journals kept in git (see ``user_cache_dir``)."""
    return user_cache_dir("journal-git", project_dir, environ)


@dataclass(frozen=True)
class Settings:
    """Everything a command reads before its manifests: the project, the chosen org, where the
    journal is, who gets notified, what is secret. Cheap to make; ``load`` adds the manifests."""

    project: ProjectConfig
    project_dir: Path
    connection: Connection
    redactor: Redactor
    webhooks: tuple[WebhookTarget, ...]
    journal_path: Path
    manifest_paths: tuple[Path, ...] = ()
    plan_key: bytes | None = None  # RECONCILER_PLAN_KEY: saved plans carry a MAC made with it
    # Where the journal is kept (a local file, or a git branch); journal_path is its local file.
    journal_store: JournalStore | None = None
    manifest_cache: Path | None = None

    def load(self) -> Workspace:
        """Load and check the manifests (all problems at once); raises ``ManifestError``."""
        return finish(self.load_steps())

    def load_steps(self) -> Steps[Workspace]:
        """``load`` in steps, one file at a time (see ``loader.Steps``)."""
        # Files unchanged since an earlier run are not parsed and checked again.
        manifests = yield from validate_manifests_steps(
            list(self.manifest_paths), self.connection.variables, cache_dir=self.manifest_cache
        )
        return Workspace(**{f.name: getattr(self, f.name) for f in fields(Settings)}, manifests=manifests)


@dataclass(frozen=True)
class Workspace(Settings):
    """The settings with the manifests loaded and checked."""

    manifests: ManifestSet = field(kw_only=True)

    def relative_manifest_paths(self) -> tuple[str, ...]:
        """The manifest paths relative to the project root, as a saved plan records them."""
        root = self.project_dir.resolve()
        out = []
        for path in self.manifest_paths:
            try:
                out.append(path.resolve().relative_to(root).as_posix())
            except ValueError:
                raise ConfigError(
                    f"{path} is outside the project ({root}); a saved plan cannot pin it"
                ) from None
        return tuple(out)


def embedded_transport(connection: Connection) -> httpx.AsyncBaseTransport | None:
    """The in-process emulator for an embedded connection (None otherwise). Built here, at the
    edge, so the client never imports the service it talks to."""
    if connection.embedded_db is None:
        return None
    from reconciler.emulator.app import create_app  # only the embedded mode needs the emulator
    from reconciler.emulator.config import EmulatorConfig

    connection.embedded_db.parent.mkdir(parents=True, exist_ok=True)
    return httpx.ASGITransport(app=create_app(EmulatorConfig(db=str(connection.embedded_db))))


def connect(
    connection: Connection, *, parallelism: int = 10, writes: bool = False
) -> AbstractAsyncContextManager[GatewayClient]:
    """``open_client`` for a command: the embedded emulator's transport supplied when needed, a
    token asking only for the scopes of reading, or of writing with ``writes``."""
    transport = embedded_transport(connection)
    return open_client(connection, parallelism=parallelism, transport=transport, writes=writes)


def manifest_paths(
    project: ProjectConfig, project_dir: Path, env: Environment | None, given: Sequence[str]
) -> list[Path]:
    """The paths given on the command line, else the environment's, else the project's."""
    if given:
        return [Path(p) for p in given]
    configured = (env.manifests if env and env.manifests else None) or project.manifests
    return [project_dir / p for p in configured]


def journal_location(
    project: ProjectConfig, project_dir: Path, env: Environment | None, given: str | None
) -> str:
    """Where the journal is: ``given`` (--journal, RECONCILER_JOURNAL), else the environment's
    ``journal:``, else the project's. A local path in reconciler.yaml is relative to the project;
    a git location (``git+URL#BRANCH``) is taken as it is."""
    if given:
        return given
    configured = (env.journal if env is not None and env.journal else None) or project.journal
    return configured if is_git_location(configured) else str(project_dir / configured)


def journal_store(
    project: ProjectConfig,
    project_dir: Path,
    env: Environment | None,
    environment: str,
    given: str | None,
    environ: Mapping[str, str],
) -> JournalStore:
    """The journal a command of this environment writes to (see ``journal_location``)."""
    location = journal_location(project, project_dir, env, given or environ.get("RECONCILER_JOURNAL"))
    return open_store(location, environment=environment, cache_root=journal_cache_dir(project_dir, environ))


def open_settings(
    env_name: str | None,
    paths: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    project_file: Path | None = None,
    journal: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> Settings:
    """Read reconciler.yaml and the environment; raises on any problem. ``variables`` (from
    --var) override the environment's."""
    environ = os.environ if environ is None else environ
    project, found = load_project(project_file)
    project_dir = found.parent if found else Path(".")
    connection = resolve(project, env_name, environ, project_dir)
    if variables:
        connection = replace(connection, variables={**connection.variables, **variables})
    env = project.environments.get(connection.environment)
    chosen = manifest_paths(project, project_dir, env, paths)
    webhooks = tuple(
        WebhookTarget(w.url, environ.get(w.secret_env) if w.secret_env else None, w.timeout_seconds)
        for w in project.webhooks
    )
    plan_key = environ.get("RECONCILER_PLAN_KEY") or None
    secrets = [connection.credentials.client_secret, plan_key, *(w.secret for w in webhooks if w.secret)]
    store = journal_store(project, project_dir, env, connection.environment, journal, environ)
    return Settings(
        project,
        project_dir,
        connection,
        from_project(project, secrets),
        webhooks,
        store.path,
        tuple(chosen),
        plan_key.encode() if plan_key else None,
        store,
        manifest_cache_dir(project_dir, environ),
    )


async def in_turns(steps: Steps[T]) -> T:
    """Run steps on the event loop, letting every other task run between two of them."""
    while True:
        try:
            waiting_for = next(steps)
        except StopIteration as done:
            return cast(T, done.value)
        if waiting_for is None:
            await asyncio.sleep(0)
        else:  # a worker process: wait without holding up the loop
            await asyncio.wrap_future(waiting_for)


async def load_while_listing(
    settings: Settings, client: GatewayClient
) -> tuple[Workspace, asyncio.Future[list[LiveResource]]]:
    """Load the manifests while the live state is fetched: the one is mostly our CPU, the other
    mostly waiting on the service, so together they take about as long as the longer of the two.

    Returns as soon as the manifests are loaded, with the listing, which may still be running:
    what needs only the manifests (the live checks' context) can be fetched alongside its last
    pages. Bad manifests win: their problems are raised, and the listing is cancelled and its
    outcome (an org that cannot be reached, say) not reported. Only reads have been sent by then.
    """
    listing = asyncio.ensure_future(client.live_state())
    try:
        ws = await in_turns(settings.load_steps())
    except BaseException:
        await _abandon(listing)
        raise
    return ws, listing


async def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has stopped, its outcome unreported."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


def ignore_rules(project: ProjectConfig) -> IgnoreRules:
    return IgnoreRules.from_config(project.ignore_differences)


def plan_options(
    ws: Settings,
    *,
    prune: bool = False,
    targets: Sequence[ResourceKey] = (),
    excludes: Sequence[ResourceKey] = (),
) -> PlanOptions:
    env = ws.project.environments.get(ws.connection.environment)
    return PlanOptions(
        project=ws.project.project,
        prune=prune or (env is not None and env.prune),
        targets=frozenset(targets),
        excludes=frozenset(excludes),
        ignore=ignore_rules(ws.project),
        environment=ws.connection.environment,
    )


async def live_context(
    ws: Workspace, client: GatewayClient
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Model capacities and the inputs of every flow the manifests name (for the live checks)."""
    desired = [m.manifest for m in ws.manifests.manifests]
    model_ids = sorted({m.spec.model_id for m in desired if isinstance(m, Prompt | ContextPolicy)})
    flow_ids = sorted({m.spec.flow_id for m in desired if isinstance(m, ContextPolicy) and m.spec.flow_id})
    limits_task = asyncio.ensure_future(client.model_capacities(model_ids))
    flows = await asyncio.gather(*(client.flow_inputs(f) for f in flow_ids))
    found = {f: inputs for f, inputs in zip(flow_ids, flows, strict=True) if inputs is not None}
    return await limits_task, found


async def make_live_plan(
    ws: Workspace,
    client: GatewayClient,
    options: PlanOptions,
    live: Awaitable[list[LiveResource]] | None = None,
) -> Plan:
    """Fetch live state (unless ``live`` is a listing under way already) and the live checks'
    context concurrently, run the live checks, and plan."""
    listing = asyncio.ensure_future(live if live is not None else client.live_state())
    try:
        capacities, flows = await live_context(ws, client)
    except BaseException:
        await _abandon(listing)
        raise
    found = await listing
    desired = [m.manifest for m in ws.manifests.manifests]
    limits = {model: int(c["max_tokens"]) for model, c in capacities.items() if "max_tokens" in c}
    problems = check_live(desired, limits, flows, capacities)
    if problems:
        raise LiveCheckError(problems)
    return make_plan(desired, found, options, ws.manifests.digest)
