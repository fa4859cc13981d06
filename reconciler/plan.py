"""The plan: what apply will do, change by change, in dependency order.

This module is pure and should NOT produce any side effects: no I/O, no clock, no network, no
mutable module state. ``make_plan`` pairs desired and live resources by ``ResourceKey`` (as
gitops-engine's reconcile step does), asks ``diff.compare`` whether each pair differs, and orders
the result in one place, ``order_changes``. The same frozen ``Plan`` is shown by ``plan``, saved as
versioned JSON, and executed by ``apply``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from reconciler.diff import (
    IgnoreRules,
    Manifest,
    ResourceDiff,
    compare,
    desired_document,
    live_document,
    live_matches,
    wire_document,
)
from reconciler.errors import UsageError
from reconciler.models import (
    MANAGED_BY_LABEL,
    Kind,
    LiveResource,
    Prompt,
    ResourceKey,
    key_of,
)

FORMAT_VERSION = "1.0"

__all__ = [
    "FORMAT_VERSION",
    "Action",
    "Change",
    "IgnoreRules",
    "Plan",
    "PlanOptions",
    "make_plan",
    "order_changes",
    "references",
]


class Action(StrEnum):
    """What apply does to one resource. ``symbol`` is what users see, as in Terraform's plans."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NO_OP = "no-op"
    ROLLBACK = "rollback"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]


_SYMBOLS: Mapping[Action, str] = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.DELETE: "-",
    Action.NO_OP: " ",
    Action.ROLLBACK: "<",
}


@dataclass(frozen=True)
class Change:
    """One resource's planned change. Documents are ``{"spec", "labels"}`` in manifest casing.

    Per action, what each field holds:

    - CREATE:   before None; after the document apply sends; diff None; etag None (the write is
                create-only: If-None-Match or a unique name); live_id None (prompts get theirs
                from the service).
    - UPDATE:   before the live document; after the desired one as apply sends it; diff what
                differs; etag the live etag seen at plan time, sent as If-Match; live_id the
                server's id.
    - DELETE:   before the live document; after None; diff None; etag sent as If-Match; live_id
                the id deleted.
    - NO_OP:    before the live document and after the same; diff None; etag and live_id as
                observed (nothing is sent).
    - ROLLBACK: like UPDATE, but after is an earlier body (from the journal), not git.

    ``reason`` is for people, never parsed. ``depends_on`` names changes of the same plan that
    must succeed first (a prompt waits for the functions/policy it references; a delete of a
    function waits for the prompts that stop referencing it), so apply can run the rest
    concurrently and skip the dependants of a change that failed. It is not for ordering output:
    ``Plan.changes`` is already in dependency order.
    """

    action: Action
    key: ResourceKey
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    diff: ResourceDiff | None
    reason: str
    etag: str | None
    live_id: str | None
    depends_on: tuple[ResourceKey, ...] = ()


@dataclass(frozen=True)
class PlanOptions:
    """What shapes a plan besides desired and live state.

    ``targets`` follow Terraform: a targeted change brings along every change it depends on
    (a targeted prompt brings the creation of the function it calls), transitively, because
    applying it alone would fail. ``excludes`` follow Terraform's ``-exclude``: an excluded change
    also leaves out every change that depends on it. Targets are applied first, then excludes.
    """

    project: str
    prune: bool = False
    targets: frozenset[ResourceKey] = frozenset()
    excludes: frozenset[ResourceKey] = frozenset()
    ignore: IgnoreRules = field(default_factory=IgnoreRules)
    environment: str = ""


@dataclass(frozen=True)
class Plan:
    """A whole plan. ``changes`` holds every planned key (no-ops too), dependency-ordered by
    ``order_changes``. ``live_checks`` lists problems found by ``rules.check_live`` (empty when fine).
    ``manifests_digest`` pins the manifests the plan was made from (apply refuses a stale plan)."""

    environment: str
    project: str
    manifests_digest: str
    changes: tuple[Change, ...]
    live_checks: tuple[str, ...] = ()
    format_version: str = FORMAT_VERSION
    # Live resources this project manages that are gone from git, when the plan was made without
    # prune: never deleted, only pointed out (a hint for the reader, not part of what apply does).
    prunable: tuple[ResourceKey, ...] = field(default=(), compare=False)

    def __repr__(self) -> str:
        # Short on purpose: asyncio formats the finished main task, result included, when
        # asyncio.run restores the SIGINT handler (CPython 3.11), which took 0.2 s twice per
        # plan of 10,000 changes with the generated repr of every change.
        return (
            f"Plan(environment={self.environment!r}, project={self.project!r}, "
            f"manifests_digest={self.manifests_digest!r}, changes=<{len(self.changes)} changes>, "
            f"live_checks={self.live_checks!r}, format_version={self.format_version!r}, "
            f"prunable=<{len(self.prunable)} keys>)"
        )

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    @property
    def creates(self) -> int:
        return self.count(Action.CREATE)

    @property
    def updates(self) -> int:
        """Updates, rollbacks included (both rewrite an existing resource)."""
        return self.count(Action.UPDATE) + self.count(Action.ROLLBACK)

    @property
    def deletes(self) -> int:
        return self.count(Action.DELETE)

    @property
    def has_changes(self) -> bool:
        return any(c.action is not Action.NO_OP for c in self.changes)


# --- References ---------------------------------------------------------------------------------


def _prompt_references(spec: Mapping[str, Any]) -> tuple[ResourceKey, ...]:
    refs = [ResourceKey(Kind.FUNCTION_DEFINITION, str(f)) for f in spec.get("functions") or ()]
    if spec.get("contextPolicy"):
        refs.append(ResourceKey(Kind.CONTEXT_POLICY, str(spec["contextPolicy"])))
    return tuple(refs)


def references(manifest: Manifest) -> tuple[ResourceKey, ...]:
    """The resources a manifest refers to (a prompt's functions and context policy)."""
    if isinstance(manifest, Prompt):
        refs = [ResourceKey(Kind.FUNCTION_DEFINITION, f) for f in manifest.spec.functions]
        if manifest.spec.context_policy:
            refs.append(ResourceKey(Kind.CONTEXT_POLICY, manifest.spec.context_policy))
        return tuple(refs)
    return ()


def _document_references(key: ResourceKey, doc: Mapping[str, Any] | None) -> tuple[ResourceKey, ...]:
    if key.kind is not Kind.PROMPT or doc is None:
        return ()
    return _prompt_references(doc.get("spec") or {})


# --- Ordering -----------------------------------------------------------------------------------

_REFERENCED_KINDS = (Kind.FUNCTION_DEFINITION, Kind.CONTEXT_POLICY)


# THE order of a plan's changes, written once. Only prompts reference anything (functions and a
# context policy), so dependencies are one level deep and four tiers order them completely:
#   0. creates/updates/rollbacks/no-ops of FunctionDefinitions and ContextPolicies,
#   1. creates/updates/rollbacks/no-ops of Prompts (they may reference tier 0),
#   2. deletes of Prompts (after every create/update, and before what they referenced goes),
#   3. deletes of FunctionDefinitions and ContextPolicies (reverse dependency order).
# Within a tier: by kind, then name, so the same inputs always give the same plan.
def _tier(change: Change) -> int:
    referenced = change.key.kind in _REFERENCED_KINDS
    if change.action is Action.DELETE:
        return 3 if referenced else 2
    return 0 if referenced else 1


def order_changes(changes: Iterable[Change]) -> tuple[Change, ...]:
    """``changes`` in THE plan order (see the comment above ``_tier``)."""
    return tuple(sorted(changes, key=lambda c: (_tier(c), c.key.kind.value, c.key.name)))


# --- Planning -----------------------------------------------------------------------------------


def _closure(
    start: Iterable[ResourceKey], edges: Mapping[ResourceKey, Iterable[ResourceKey]]
) -> set[ResourceKey]:
    seen: set[ResourceKey] = set()
    todo = list(start)
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        todo.extend(edges.get(key, ()))
    return seen


def _select(changes: list[Change], options: PlanOptions) -> list[Change]:
    """Apply --target (with dependencies) and --exclude (with dependants); see ``PlanOptions``."""
    depends = {c.key: c.depends_on for c in changes}
    keep = set(depends)
    if options.targets:
        keep &= _closure(options.targets, depends)
    if options.excludes:
        dependants: dict[ResourceKey, list[ResourceKey]] = {}
        for c in changes:
            for dep in c.depends_on:
                dependants.setdefault(dep, []).append(c.key)
        keep -= _closure(options.excludes, dependants)
    if not options.targets and not options.excludes:
        return changes  # nothing left out, so every dependency is kept (no copy of each change)
    kept = []
    for c in changes:
        if c.key in keep:
            depends_on = tuple(d for d in c.depends_on if d in keep)
            kept.append(c if depends_on == c.depends_on else replace(c, depends_on=depends_on))
    return kept


def make_plan(
    desired: Sequence[Manifest], live: Sequence[LiveResource], options: PlanOptions, manifests_digest: str
) -> Plan:
    """Pair desired and live by key and decide each resource's action.

    - In git, not live: CREATE. In both: UPDATE when ``compare`` finds a difference, else NO_OP.
    - Live, not in git: DELETE only with ``options.prune`` AND only when the live resource is
      labelled ``MANAGED_BY_LABEL = options.project``. An unlabelled live resource, or one
      labelled for another project, is never deleted; without prune it simply does not appear.
    - A prompt may reference a function or policy that is live but not in git: that is fine
      (no dependency is recorded, nothing waits).
    Raises ValueError when two manifests share a key (the loader reports that first, with files).
    """
    live_by_key = {r.key: r for r in live}
    desired_by_key: dict[ResourceKey, Manifest] = {}
    for manifest in desired:
        key = key_of(manifest)
        if key in desired_by_key:
            raise ValueError(f"{key} is defined more than once in the manifests")
        desired_by_key[key] = manifest
    # A --target or --exclude that names nothing is a typo; planning "no changes" would hide it.
    for flag, keys in (("--target", options.targets), ("--exclude", options.excludes)):
        unknown = sorted(str(k) for k in keys if k not in desired_by_key and k not in live_by_key)
        if unknown:
            raise UsageError(
                f"{flag} {', '.join(unknown)}: no such resource in the manifests or the live org"
            )

    changes: list[Change] = []
    for key, manifest in desired_by_key.items():
        after = desired_document(manifest, options.project, options.ignore)
        deps = tuple(dict.fromkeys(r for r in references(manifest) if r in desired_by_key))
        current = live_by_key.get(key)
        if current is None:
            changes.append(
                Change(Action.CREATE, key, None, after, None, "not in the live org", None, None, deps)
            )
            continue
        if live_matches(after, current):
            # Exactly git's document: its canonical form is that document too, and is not made.
            # The live data is kept (it is the same), not ``after``: the live state is held anyway.
            seen = wire_document(current)
            changes.append(
                Change(Action.NO_OP, key, seen, seen, None, "live matches git", current.etag, current.id, ())
            )
            continue
        before = live_document(current)
        diff = compare(after, before, key.kind, options.ignore.pointers_for(key))
        if diff:
            count = len(diff.fields)
            changes.append(
                Change(
                    Action.UPDATE,
                    key,
                    before,
                    after,
                    diff,
                    f"live differs from git in {count} field{'s' if count != 1 else ''}",
                    current.etag,
                    current.id,
                    deps,
                )
            )
        else:
            changes.append(
                Change(
                    Action.NO_OP, key, before, before, None, "live matches git", current.etag, current.id, ()
                )
            )

    if options.prune:
        deletes = [
            Change(
                Action.DELETE,
                r.key,
                live_document(r),
                None,
                None,
                f"labelled {MANAGED_BY_LABEL}={options.project} and not in git (--prune)",
                r.etag,
                r.id,
            )
            for k, r in live_by_key.items()
            if k not in desired_by_key and r.labels.get(MANAGED_BY_LABEL) == options.project
        ]
        # A delete of a function/policy waits for every prompt change that stops referencing it:
        # the prompt's own delete, or its update to a body without the reference.
        leaving = [
            (c.key, _document_references(c.key, c.before))
            for c in (*changes, *deletes)
            if c.key.kind is Kind.PROMPT and c.action in (Action.UPDATE, Action.DELETE)
        ]
        changes += [
            Change(
                d.action,
                d.key,
                d.before,
                d.after,
                d.diff,
                d.reason,
                d.etag,
                d.live_id,
                tuple(sorted(k for k, refs in leaving if d.key in refs)),
            )
            for d in deletes
        ]
    prunable: tuple[ResourceKey, ...] = ()
    if not options.prune:
        prunable = tuple(
            sorted(
                (
                    k
                    for k, r in live_by_key.items()
                    if k not in desired_by_key and r.labels.get(MANAGED_BY_LABEL) == options.project
                ),
                key=str,
            )
        )
    return Plan(
        options.environment,
        options.project,
        manifests_digest,
        order_changes(_select(changes, options)),
        prunable=prunable,
    )


# --- Saved plans (versioned JSON) ---------------------------------------------------------------
