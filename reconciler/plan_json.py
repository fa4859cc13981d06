"""The saved plan as JSON: the versioned codec of ``plan -o`` files, kept apart from planning
the way Terraform keeps its jsonplan package apart.

A saved plan travels between CI jobs as an artifact and is input someone else can write, so
reading one checks every field's type and raises ``PlanFileError`` (never a bare ValueError or
KeyError) naming what is wrong. Reading a plan does not make it trusted: apply re-derives what
it can from the manifests and the live org. ``summary`` is derived data and is not read back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from reconciler.diff import BreakingChange, FieldChange, FieldChangeKind, ResourceDiff
from reconciler.errors import PlanFileError
from reconciler.models import Kind, ResourceKey
from reconciler.plan import FORMAT_VERSION, Action, Change, Plan

_FIELD_KINDS: frozenset[str] = frozenset({"added", "removed", "changed"})


def _diff_to_json(diff: ResourceDiff | None) -> dict[str, Any] | None:
    if diff is None:
        return None
    return {
        "fields": [
            {"path": f.path, "before": f.before, "after": f.after, "kind": f.kind} for f in diff.fields
        ],
        "template_diffs": dict(diff.template_diffs),
        "breaking": [{"path": b.path, "reason": b.reason} for b in diff.breaking],
    }


def _field_from_json(doc: Mapping[str, Any]) -> FieldChange:
    if doc["kind"] not in _FIELD_KINDS:
        raise PlanFileError(f"unknown field change kind {doc['kind']!r}")
    return FieldChange(str(doc["path"]), doc["before"], doc["after"], cast(FieldChangeKind, doc["kind"]))


def _diff_from_json(doc: Mapping[str, Any] | None) -> ResourceDiff | None:
    if doc is None:
        return None
    return ResourceDiff(
        tuple(_field_from_json(f) for f in doc["fields"]),
        {str(k): str(v) for k, v in doc["template_diffs"].items()},
        tuple(BreakingChange(str(b["path"]), str(b["reason"])) for b in doc["breaking"]),
    )


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data (Terraform-style, versioned by ``format_version``)."""
    return {
        "format_version": plan.format_version,
        "environment": plan.environment,
        "project": plan.project,
        "manifests_digest": plan.manifests_digest,
        "live_checks": list(plan.live_checks),
        "summary": {action.value: plan.count(action) for action in Action},
        "changes": [
            {
                "action": c.action.value,
                "kind": c.key.kind.value,
                "name": c.key.name,
                "before": c.before,
                "after": c.after,
                "diff": _diff_to_json(c.diff),
                "reason": c.reason,
                "etag": c.etag,
                "live_id": c.live_id,
                "depends_on": [str(d) for d in c.depends_on],
            }
            for c in plan.changes
        ],
    }


def plan_from_json(doc: Mapping[str, Any]) -> Plan:
    """Read what ``plan_to_json`` wrote; raises PlanFileError on an unknown ``format_version`` or a
    malformed document."""
    version = doc.get("format_version") if isinstance(doc, Mapping) else None
    if version != FORMAT_VERSION:
        raise PlanFileError(
            f"unsupported plan format_version {version!r} (this reconciler reads {FORMAT_VERSION})"
        )
    try:
        changes = tuple(
            Change(
                Action(c["action"]),
                ResourceKey(Kind(c["kind"]), str(c["name"])),
                c["before"],
                c["after"],
                _diff_from_json(c["diff"]),
                str(c["reason"]),
                c["etag"],
                c["live_id"],
                tuple(ResourceKey.parse(d) for d in c["depends_on"]),
            )
            for c in doc["changes"]
        )
        return Plan(
            str(doc["environment"]),
            str(doc["project"]),
            str(doc["manifests_digest"]),
            changes,
            tuple(str(p) for p in doc["live_checks"]),
            version,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise PlanFileError(f"malformed plan document: {type(exc).__name__}: {exc}") from None


# A plan of 20,000 resources with their bodies is tens of MB; far beyond that is not a plan.
MAX_PLAN_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class PlanOrigin:
    """What a saved plan was made from, so apply can make it again and compare (see promise.py),
    and refuse it for another org. Paths are relative to the project root."""

    paths: tuple[str, ...]
    targets: tuple[str, ...]
    excludes: tuple[str, ...]
    prune: bool
    base_url: str
    org_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "paths": list(self.paths),
            "targets": list(self.targets),
            "excludes": list(self.excludes),
            "prune": self.prune,
            "base_url": self.base_url,
            "org_id": self.org_id,
        }

    @classmethod
    def from_json(cls, doc: Any) -> PlanOrigin:
        def strings(name: str) -> tuple[str, ...]:
            value = doc.get(name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PlanFileError(f"origin.{name} must be a list of strings")
            return tuple(value)

        if not isinstance(doc, Mapping):
            raise PlanFileError("origin must be an object")
        if not isinstance(doc.get("prune"), bool):
            raise PlanFileError("origin.prune must be true or false")
        for name in ("base_url", "org_id"):
            if not isinstance(doc.get(name), str):
                raise PlanFileError(f"origin.{name} must be a string")
        return cls(
            strings("paths"),
            strings("targets"),
            strings("excludes"),
            doc["prune"],
            doc["base_url"],
            doc["org_id"],
        )


def plan_mac(document: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 of the plan document (without its ``mac``), as canonical JSON."""
    body = {k: v for k, v in document.items() if k != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def saved_plan_text(document: dict[str, Any], origin: PlanOrigin, key: bytes | None) -> str:
    """The text of a plan file: the (already redacted) plan document, its origin, and with a
    key, a MAC over both that apply checks."""
    saved = {**document, "origin": origin.to_json()}
    if key:
        saved["mac"] = plan_mac(saved, key)
    return json.dumps(saved, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class SavedPlan:
    plan: Plan
    origin: PlanOrigin | None  # None: a plan file without one (made by an older reconciler)
    digest: str  # SHA-256 of the file's bytes: what the journal records as the plan applied
    has_mac: bool = False


def looks_like_plan(path: Path) -> bool:
    """Whether ``path`` is a saved plan rather than manifests: named .json, or by content whatever
    its name (`plan -o tfplan` works): a file (not a folder) of JSON, not named as YAML."""
    if path.suffix.lower() == ".json":
        return True
    if not path.is_file() or path.suffix.lower() in (".yaml", ".yml"):
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(64).lstrip()
    except OSError:
        return False
    return head.startswith(b"{")


def read_plan_file(path: Path, key: bytes | None = None) -> SavedPlan:
    """A saved plan file, read with a size limit; ``PlanFileError`` names what is wrong with it.

    With ``key``, the file must carry a valid MAC made with that key.
    """
    try:
        size = path.stat().st_size
        if size > MAX_PLAN_BYTES:
            raise PlanFileError(f"{path}: {size} bytes is larger than any plan ({MAX_PLAN_BYTES} at most)")
        data = path.read_bytes()
        document = json.loads(data)
    except OSError as exc:
        raise PlanFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise PlanFileError(f"{path}: not a reconciler plan: not valid JSON ({exc})") from None
    try:
        plan = plan_from_json(document)
        if key is not None:
            mac = document.get("mac")
            if not isinstance(mac, str) or not hmac.compare_digest(mac, plan_mac(document, key)):
                raise PlanFileError(
                    "its MAC does not match (RECONCILER_PLAN_KEY is set, so only a plan made with that key "
                    "and not changed since is applied)"
                )
        origin = PlanOrigin.from_json(document["origin"]) if "origin" in document else None
    except PlanFileError as exc:
        raise PlanFileError(f"{path}: {exc}") from None
    return SavedPlan(plan, origin, hashlib.sha256(data).hexdigest(), "mac" in document)
