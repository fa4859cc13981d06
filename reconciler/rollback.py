"""Planning the undo of a past run from its journal records (pure: no I/O).

Each change the run applied is reversed, newest first:

    created  -> delete it, If-Match the etag the run left (changed since? a conflict)
    updated  -> put back the before body, If-Match the etag the run left
    deleted  -> create it again from the before body

The result is an ordinary ``Plan`` executed by apply with the same locking, so a resource
someone changed after that run is reported as a conflict and never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from reconciler.diff import ResourceDiff, compare
from reconciler.journal import JournalRecord, RecordType
from reconciler.kinds import adapter_for
from reconciler.models import Kind, LiveResource, ResourceKey
from reconciler.plan import Action, Change, Plan
from reconciler.redact import holds_redaction


def _references(doc: dict[str, Any] | None) -> set[ResourceKey]:
    spec = (doc or {}).get("spec") or {}
    refs = {ResourceKey(Kind.FUNCTION_DEFINITION, str(f)) for f in spec.get("functions") or []}
    if spec.get("contextPolicy"):
        refs.add(ResourceKey(Kind.CONTEXT_POLICY, str(spec["contextPolicy"])))
    return refs


def rollback_diff(
    kind: Kind, current: Mapping[str, Any] | None, restore: Mapping[str, Any] | None
) -> ResourceDiff | None:
    """What putting ``restore`` back over ``current`` changes, field by field (and template by
    template), so whoever approves a rollback sees what it does. Both are {spec, labels}; the
    service's defaults are applied to both so only real differences show."""
    if current is None or restore is None:
        return None
    adapter = adapter_for(kind)

    def comparable(doc: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "spec": adapter.with_server_defaults(dict(doc["spec"])),
            "labels": dict(doc.get("labels") or {}),
        }

    return compare(comparable(restore), comparable(current), kind)


def rollback_changes(records: Iterable[JournalRecord]) -> tuple[list[Change], list[str]]:
    """Reverse changes for every applied outcome, and the reasons some could not be reversed."""
    changes: list[Change] = []
    refused: list[str] = []
    seen: set[ResourceKey] = set()
    records = list(records)
    for record in records:
        if record.type is RecordType.OUTCOME and record.data.get("status") == "unknown":
            refused.append(
                f"{record.data.get('kind')}/{record.data.get('name')}: the outcome of its write was lost "
                "(found afterwards, not seen); restore it from git instead"
            )
    applied = [r for r in records if r.type is RecordType.OUTCOME and r.data.get("status") == "applied"]
    for record in reversed(applied):
        data = record.data
        key = ResourceKey(Kind(data["kind"]), data["name"])
        if key in seen:  # only the run's last word on a resource is undone... once
            continue
        seen.add(key)
        before, after = data.get("before"), data.get("after")
        reason = f"rollback of run {record.run_id}"
        action = Action(data["action"])
        restore = before if action in (Action.UPDATE, Action.ROLLBACK, Action.DELETE) else None
        if restore is not None and holds_redaction(restore):
            refused.append(f"{key}: its earlier body holds redacted fields; restore it from git instead")
            continue
        match action:
            case Action.CREATE:
                changes.append(
                    Change(
                        Action.DELETE,
                        key,
                        after,
                        None,
                        None,
                        reason,
                        data.get("etag_after"),
                        data.get("live_id"),
                        (),
                    )
                )
            case Action.UPDATE | Action.ROLLBACK:
                changes.append(
                    Change(
                        Action.ROLLBACK,
                        key,
                        after,
                        before,
                        rollback_diff(key.kind, after, before),
                        reason,
                        data.get("etag_after"),
                        data.get("live_id"),
                        (),
                    )
                )
            case Action.DELETE:
                changes.append(Change(Action.CREATE, key, None, before, None, reason, None, None, ()))
            case _:
                continue
    # Dependencies follow the references in the bodies, as in a plan: a prompt is deleted before
    # the function it referenced, and re-created after it.
    keys = {c.key for c in changes}
    chained = []
    for c in changes:
        if c.action is Action.DELETE:
            deps = tuple(
                o.key for o in changes if o.action is Action.DELETE and c.key in _references(o.before)
            )
        else:
            deps = tuple(k for k in _references(c.after) if k in keys)
        chained.append(replace(c, depends_on=deps))
    return chained, refused


def rollback_plan(
    records: Iterable[JournalRecord], *, environment: str, project: str
) -> tuple[Plan, list[str]]:
    changes, refused = rollback_changes(records)
    return Plan(
        environment=environment, project=project, manifests_digest="", changes=tuple(changes)
    ), refused


def revision_rollback_plan(
    live: LiveResource, earlier_wire: Mapping[str, Any], revision: int, *, environment: str, project: str
) -> Plan:
    """A plan that puts a live prompt back to an earlier server-side revision (its /versions
    entry, in wire form), with the diff shown before it is approved. Labels stay as they are."""
    earlier = adapter_for(Kind.PROMPT).from_wire(dict(earlier_wire))
    before = {"spec": live.spec, "labels": live.labels}
    after = {"spec": earlier.spec, "labels": live.labels}
    change = Change(
        Action.ROLLBACK,
        live.key,
        before,
        after,
        rollback_diff(Kind.PROMPT, before, after),
        f"back to server revision {revision}",
        live.etag,
        live.id,
    )
    return Plan(environment, project, "", (change,))
