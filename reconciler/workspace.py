"""What a command works on: the project, its chosen org, its manifests, and the live state.

This is the glue between the pure planner and the edges: it reads reconciler.yaml and the
environment, loads and checks the manifests (all problems at once, before any request), and
fetches live state and the live-org context concurrently to make a ``Plan``. Commands (plan,
apply, drift, export, rollback) share it so they all see the org the same way.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.client.api import GatewayClient
from reconciler.client.connect import Connection, resolve
from reconciler.errors import ConfigError, LiveCheckError
from reconciler.loader import ManifestSet, load_project
from reconciler.models import ContextPolicy, Environment, ProjectConfig, Prompt, ResourceKey
from reconciler.notify import WebhookTarget
from reconciler.plan import IgnoreRules, Plan, PlanOptions, check_live, make_plan
from reconciler.redact import Redactor, from_project
from reconciler.rules import validate_manifests


@dataclass(frozen=True)
class Workspace:
    project: ProjectConfig
    project_dir: Path
    connection: Connection
    manifests: ManifestSet
    redactor: Redactor
    webhooks: tuple[WebhookTarget, ...]
    journal_path: Path
    manifest_paths: tuple[Path, ...] = ()
    plan_key: bytes | None = None  # RECONCILER_PLAN_KEY: saved plans carry a MAC made with it

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


def manifest_paths(
    project: ProjectConfig, project_dir: Path, env: Environment | None, given: Sequence[str]
) -> list[Path]:
    """The paths given on the command line, else the environment's, else the project's."""
    if given:
        return [Path(p) for p in given]
    configured = (env.manifests if env and env.manifests else None) or project.manifests
    return [project_dir / p for p in configured]


def open_workspace(
    env_name: str | None,
    paths: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    project_file: Path | None = None,
    journal: str | None = None,
) -> Workspace:
    """Load everything a command needs before it touches the network; raises on any problem."""
    environ = os.environ if environ is None else environ
    project, found = load_project(project_file)
    project_dir = found.parent if found else Path(".")
    connection = resolve(project, env_name, environ)
    env = project.environments.get(connection.environment)
    chosen = manifest_paths(project, project_dir, env, paths)
    manifests = validate_manifests(chosen, connection.variables)
    webhooks = tuple(
        WebhookTarget(w.url, environ.get(w.secret_env) if w.secret_env else None, w.timeout_seconds)
        for w in project.webhooks
    )
    plan_key = environ.get("RECONCILER_PLAN_KEY") or None
    secrets = [connection.credentials.client_secret, plan_key, *(w.secret for w in webhooks if w.secret)]
    journal_path = Path(journal or environ.get("RECONCILER_JOURNAL") or project_dir / project.journal)
    return Workspace(
        project,
        project_dir,
        connection,
        manifests,
        from_project(project, secrets),
        webhooks,
        journal_path,
        tuple(chosen),
        plan_key.encode() if plan_key else None,
    )


def ignore_rules(project: ProjectConfig) -> IgnoreRules:
    return IgnoreRules.from_config(project.ignore_differences)


def plan_options(
    ws: Workspace,
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
) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """Model limits and the inputs of every flow the manifests name (for the live checks)."""
    desired = [m.manifest for m in ws.manifests.manifests]
    model_ids = sorted({m.spec.model_id for m in desired if isinstance(m, Prompt | ContextPolicy)})
    flow_ids = sorted({m.spec.flow_id for m in desired if isinstance(m, ContextPolicy) and m.spec.flow_id})
    limits_task = asyncio.ensure_future(client.model_limits(model_ids))
    flows = await asyncio.gather(*(client.flow_inputs(f) for f in flow_ids))
    found = {f: inputs for f, inputs in zip(flow_ids, flows, strict=True) if inputs is not None}
    return await limits_task, found


async def make_live_plan(ws: Workspace, client: GatewayClient, options: PlanOptions) -> Plan:
    """Fetch live state and context concurrently, run the live checks, and plan."""
    live, (limits, flows) = await asyncio.gather(client.live_state(), live_context(ws, client))
    desired = [m.manifest for m in ws.manifests.manifests]
    problems = check_live(desired, limits, flows)
    if problems:
        raise LiveCheckError(problems)
    return make_plan(desired, live, options, ws.manifests.digest)
