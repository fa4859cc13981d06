"""Reading a golden case (tests/golden/<case>/) into planner inputs, and planning it.

A case holds ``desired.yaml`` (manifests), ``live.json`` (a list of {kind, name, id, etag, spec,
labels} with spec in manifest casing), and optionally ``options.json`` ({project, prune, targets,
excludes, ignoreDifferences, environment, models, flows}). Live specs go through the kind's
adapter (to the wire and back) exactly as a listing would deliver them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter

from reconciler.kinds import adapter_for
from reconciler.models import IgnoreDifferences, Kind, LiveResource, Manifest, ResourceKey
from reconciler.plan import IgnoreRules, Plan, PlanOptions, make_plan
from reconciler.rules import check_live

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
MANIFEST = TypeAdapter(Manifest)


@dataclass(frozen=True)
class Case:
    desired: list[Any]
    live: list[LiveResource]
    options: PlanOptions
    models: dict[str, int] | None
    flows: dict[str, dict[str, str]] | None
    digest: str


def parse_manifests(text: str) -> list[Any]:
    return [MANIFEST.validate_python(doc) for doc in yaml.safe_load_all(text) if doc is not None]


def live_resource(item: dict[str, Any]) -> LiveResource:
    kind = Kind(item["kind"])
    adapter = adapter_for(kind)
    body = adapter.to_wire(item["name"], item["spec"], item.get("labels", {}))
    body.update(id=item.get("id", item["name"]), etag=item.get("etag", "etag-1"))
    return adapter.from_wire(body)


def load_case(folder: Path) -> Case:
    text = (folder / "desired.yaml").read_text(encoding="utf-8")
    live = [live_resource(i) for i in json.loads((folder / "live.json").read_text(encoding="utf-8"))]
    opts_file = folder / "options.json"
    raw = json.loads(opts_file.read_text(encoding="utf-8")) if opts_file.exists() else {}
    ignore = IgnoreRules.from_config(
        IgnoreDifferences.model_validate(i) for i in raw.get("ignoreDifferences", [])
    )
    options = PlanOptions(
        project=raw.get("project", "demo"),
        prune=raw.get("prune", False),
        targets=frozenset(ResourceKey.parse(t) for t in raw.get("targets", [])),
        excludes=frozenset(ResourceKey.parse(t) for t in raw.get("excludes", [])),
        ignore=ignore,
        environment=raw.get("environment", "test"),
    )
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Case(parse_manifests(text), live, options, raw.get("models"), raw.get("flows"), digest)


def plan_case(folder: Path) -> Plan:
    case = load_case(folder)
    plan = make_plan(case.desired, case.live, case.options, case.digest)
    if case.models is not None:
        problems = check_live(case.desired, case.models, case.flows or {})
        plan = replace(plan, live_checks=tuple(problems))
    return plan


def case_dirs() -> list[Path]:
    return sorted(p for p in GOLDEN.iterdir() if (p / "desired.yaml").exists())
