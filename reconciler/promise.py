"""What `apply PLAN.json` may execute: the saved plan, checked against the plan made again now.

A saved plan travels between CI jobs as an artifact: anyone who can write the artifact can write
the file, so nothing in it is believed that can be recomputed. Apply makes the plan again from
the inputs the file pins (the same manifests, by digest; the same targets, excludes and prune)
and the live org as it is now, and this module compares the two:

- A change the file shows must be what the fresh plan gives: same action, same body to write,
  same live resource (a live id never moves to another resource). Otherwise the whole file is
  refused, naming the first difference.
- Except where the live resource moved since the plan (its etag differs): that change is kept as
  reviewed but sent with the plan's etag, so the service refuses it (412) and apply reports a
  conflict. Nothing someone else wrote is overwritten, and the live id is always the one found
  live now, never the file's.
- What the file cannot justify is refused: an etag of ``*``, a rollback, a delete in a plan made
  without prune or of a resource that is in the manifests, a change to a resource that is
  neither in the manifests nor live.
- A change the fresh plan has but the file does not show is never made ("never write what the
  plan did not show"); it is listed as skipped, to be planned again.

Pure: values in, values out (the caller fetches live state and reads the file).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.diff import fingerprint
from reconciler.errors import PlanFileError
from reconciler.models import ResourceKey
from reconciler.plan import Action, Change, Plan


@dataclass(frozen=True)
class BoundPlan:
    """The plan apply executes, and the fresh changes it leaves out (with why)."""

    plan: Plan
    skipped: tuple[str, ...]


def _refuse(key: ResourceKey, why: str) -> PlanFileError:
    return PlanFileError(
        f"the saved plan does not match what the manifests and the live org give now: {key}: {why}; "
        "nothing was written (make the plan again with `reconciler plan -o`)"
    )


def bind_saved_plan(saved: Plan, fresh: Plan, shown: Callable[[Change], Any], *, prune: bool) -> BoundPlan:
    """The changes of ``saved`` as ``fresh`` justifies them; raises ``PlanFileError`` otherwise.

    ``shown(change)`` is a fresh change's body as a saved plan shows it (redacted), to compare
    with the saved ``after``; ``prune`` is whether the saved plan was made with prune.
    """
    fresh_by_key: Mapping[ResourceKey, Change] = {c.key: c for c in fresh.changes}
    seen: set[ResourceKey] = set()
    planned: set[ResourceKey] = set()  # what the saved plan shows changing
    executed: list[Change] = []
    for s in saved.changes:
        if s.key in seen:
            raise _refuse(s.key, "it appears twice")
        seen.add(s.key)
        if s.action is Action.NO_OP:
            continue
        planned.add(s.key)
        if s.etag == "*":
            raise _refuse(s.key, "an etag of '*' would overwrite any change; no plan holds one")
        if s.action is Action.ROLLBACK:
            raise _refuse(s.key, "a plan made by `plan` never rolls back (use `reconciler rollback`)")
        f = fresh_by_key.get(s.key)
        if f is None:
            raise _refuse(
                s.key, f"{s.action.value} of a resource this plan does not manage (not in the manifests)"
            )
        if None not in (s.live_id, f.live_id) and s.live_id != f.live_id:
            raise _refuse(s.key, f"the plan names live id {s.live_id!r}, the org has {f.live_id!r}")
        if s.action is Action.DELETE:
            if not prune:
                raise _refuse(s.key, "a delete in a plan made without --prune")
            if f.action is not Action.DELETE and f.after is not None:
                raise _refuse(s.key, "it is in the manifests, so it is never deleted")
        elif f.after is None or fingerprint(shown(f)) != fingerprint(s.after):
            raise _refuse(s.key, "the body to write is not the one the manifests give")
        if s.etag == f.etag:  # the live resource did not move: everything must agree
            if f.action is not s.action:
                raise _refuse(
                    s.key, f"the plan says {s.action.value}, the manifests and the org say {f.action.value}"
                )
            executed.append(f)
        elif f.live_id is None and s.action is not Action.CREATE:
            # Gone since the plan: there is nothing to change, and the file's id is not believed.
            executed.append(replace(f, action=Action.NO_OP, reason="gone from the org since the plan"))
        else:
            # Moved since the plan: sent with the plan's etag, the write meets a 412 (a conflict).
            reason = f"{s.reason} (the live resource changed since the plan)"
            after = None if s.action is Action.DELETE else f.after
            executed.append(replace(f, action=s.action, etag=s.etag, after=after, reason=reason))
    skipped = tuple(
        f"{c.key}: {c.action.value} is not in the saved plan (it changed since the plan); run plan again"
        for c in fresh.changes
        if c.action is not Action.NO_OP and c.key not in planned
    )
    keys = {c.key for c in executed}
    changes = tuple(replace(c, depends_on=tuple(d for d in c.depends_on if d in keys)) for c in executed)
    return BoundPlan(replace(fresh, changes=changes), skipped)
