"""Normalize and compare one resource: desired (git) against live (the org) -> ``ResourceDiff``.

This module is pure and should NOT produce any side effects: no I/O, no clock, no network, no
mutable module state. It takes plain values (manifest models, ``LiveResource``) and returns values.

Normalization, so that an unchanged resource never shows a diff:

- desired specs get the service's defaults (``adapter.with_server_defaults``: maxLength 255 on
  strings, softLimitRatio -> softLimit, model defaults) before anything is compared;
- ``canonical`` sorts mapping keys and the lists that are sets (``SET_LIKE_PATHS``, one table),
  and writes integral floats as integers (JSON does not tell ``1`` from ``1.0``);
- ignoreDifferences pointers are removed from BOTH sides before comparing.

Equality is decided first by comparing the two documents' sorted-key JSON bytes (orjson, a few
microseconds): identical bytes mean identical data, hence identical canonical forms and
fingerprints, so most unchanged resources stop there. Documents whose bytes differ go through
``canonical`` and ``fingerprint`` (set order and ``1.0`` vs ``1`` are told apart there); only
resources whose fingerprints differ are walked to name their changed fields (``deep_diff``), and
DeepDiff runs only on the lists that differ.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from reconciler import pointers
from reconciler.kinds import adapter_for
from reconciler.models import (
    MANAGED_BY_LABEL,
    NO_ADOPT_ANNOTATION,
    ContextPolicy,
    FunctionDefinition,
    IgnoreDifferences,
    Kind,
    LiveResource,
    Prompt,
    ResourceKey,
    spec_dict,
)

FieldChangeKind = Literal["added", "removed", "changed"]
Manifest = FunctionDefinition | Prompt | ContextPolicy

# Lists whose order carries no meaning, per kind, as JSON pointers into the document
# ({"spec", "labels"}); "**" stands for any number of segments. Only list values found at these
# paths are sorted. This is the one place that says which lists are sets.
#
# - JSON Schema ``required`` (at every nesting level of a function's parameters) is a set of
#   names: the service and the model read it as membership only.
# - A prompt's ``functions`` is the set of tools offered to the model.
# - A policy's ``metadataFields`` is the set of fields copied into the context.
#
# ``enum`` is deliberately NOT here: the service stores it as given and the model reads the
# schema as text, where the order of choices is visible (authors put the usual value first).
# A reordered enum is therefore a real, non-breaking update. Likewise prompt ``variables`` and
# ``variants`` and policy ``piiMasking`` keep their order (masking rules apply in order).
# Sorting serves comparison only: apply sends the manifest's own order.
SET_LIKE_PATHS: Mapping[Kind, tuple[str, ...]] = {
    Kind.FUNCTION_DEFINITION: ("/spec/parameters/**/required",),
    Kind.PROMPT: ("/spec/functions",),
    Kind.CONTEXT_POLICY: ("/spec/metadataFields",),
}

# Constraints whose lowering (max) or raising (min) rejects values that used to be valid.
_UPPER_BOUNDS = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")
_LOWER_BOUNDS = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")

_REPORT_KINDS: Mapping[str, FieldChangeKind] = {
    "dictionary_item_added": "added",
    "iterable_item_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_removed": "removed",
    "values_changed": "changed",
    "type_changes": "changed",
}


@dataclass(frozen=True)
class FieldChange:
    """One leaf (or whole subtree) that differs. ``path`` is a JSON pointer into the document,
    e.g. ``/spec/parameters/properties/city/type``; ``before`` is live, ``after`` is git (None on
    the side where the field is absent: ``kind`` says which)."""

    path: str
    before: Any
    after: Any
    kind: FieldChangeKind


@dataclass(frozen=True)
class BreakingChange:
    """A function-parameter change that can break callers, e.g. ``parameter 'city' removed``.
    ``path`` points at the parameter (or constraint) concerned."""

    path: str
    reason: str


@dataclass(frozen=True)
class ResourceDiff:
    """How live differs from git for one resource; empty (falsy) when they match.

    ``template_diffs`` maps a spec field ("template", "variants/<name>/template") to a unified
    line diff, live -> git. ``breaking`` is only ever non-empty for FunctionDefinitions.
    """

    fields: tuple[FieldChange, ...] = ()
    template_diffs: Mapping[str, str] = field(default_factory=dict)
    breaking: tuple[BreakingChange, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fields or self.template_diffs)


@dataclass(frozen=True)
class IgnoreRules:
    """ignoreDifferences from reconciler.yaml: per kind, optionally per name, JSON pointers
    relative to the spec (e.g. ``/template``, ``/parameters/properties/*/description``).
    A ``*`` segment matches every key or index at that level."""

    rules: tuple[tuple[Kind, str | None, tuple[str, ...]], ...] = ()

    @classmethod
    def from_config(cls, entries: Iterable[IgnoreDifferences]) -> IgnoreRules:
        """Build from ``ProjectConfig.ignore_differences`` (whose model checked the pointers)."""
        return cls(tuple((e.kind, e.name, tuple(e.json_pointers)) for e in entries))

    def pointers_for(self, key: ResourceKey) -> tuple[str, ...]:
        """Every pointer that applies to this resource (kind-wide ones and its own)."""
        return self.pointers(key.kind, key.name)

    def pointers(self, kind: Kind, name: str) -> tuple[str, ...]:
        return tuple(
            p
            for rule_kind, rule_name, paths in self.rules
            if rule_kind is kind and rule_name in (None, name)
            for p in paths
        )


# --- Normalization ------------------------------------------------------------------------------


_SET_LIKE_PATTERNS: Mapping[Kind | None, tuple[tuple[str, ...], ...]] = {
    **{kind: tuple(pointers.split(p) for p in paths) for kind, paths in SET_LIKE_PATHS.items()},
    # Without a kind, every kind's paths apply: they never collide (no kind has another's fields).
    None: tuple(pointers.split(p) for paths in SET_LIKE_PATHS.values() for p in paths),
}


def _sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _sort_sets(node: Any, pattern: tuple[str, ...]) -> None:
    """Sort, in place, the lists ``pattern`` names below ``node`` (a fresh canonical copy).
    Walking along the pattern, not the whole tree with paths, keeps this cheap: it runs on
    every resource of every plan."""
    if not pattern:
        return
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        _sort_sets(node, rest)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                _sort_sets(child, pattern)
        return
    if isinstance(node, dict):
        found = list(node.values()) if head == "*" else [node[head]] if head in node else []
    elif isinstance(node, list):
        found = node if head == "*" else [node[int(head)]] if head.isdigit() and int(head) < len(node) else []
    else:
        return
    for child in found:
        if rest:
            _sort_sets(child, rest)
        elif isinstance(child, list):
            child.sort(key=_sort_key)


def canonical(doc: Any, kind: Kind | None = None) -> Any:
    """``doc`` ({"spec", "labels"}) with keys sorted, set-like lists sorted, integral floats as
    ints. A new value; ``doc`` is not changed. Without ``kind`` every kind's set-like paths apply."""
    out = _plain(doc)
    for pattern in _SET_LIKE_PATTERNS[kind]:
        _sort_sets(out, pattern)
    return out


def _digest(canonical_doc: Any) -> str:
    text = json.dumps(canonical_doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(doc: Any, kind: Kind | None = None) -> str:
    """sha256 of the canonical JSON of ``doc``: equal fingerprints mean nothing to change."""
    return _digest(canonical(doc, kind))


def desired_document(manifest: Manifest, project: str, ignore: IgnoreRules | None = None) -> dict[str, Any]:
    """What apply sends for ``manifest``: its spec as the service will store it, and its labels
    plus ``MANAGED_BY_LABEL: project`` (unless annotated ``adopt: "false"``).

    ``ignore`` does not change the document: a write replaces the whole resource (the service has
    no partial update), so ignored fields are sent as git has them; they are left out of the
    comparison only (``compare``). It is accepted so every caller builds the document the same way.
    """
    del ignore
    kind = Kind(manifest.kind)
    labels = dict(manifest.metadata.labels)
    if manifest.metadata.annotations.get(NO_ADOPT_ANNOTATION) != "false":
        labels[MANAGED_BY_LABEL] = project
    # spec_dict is the model's own dump, so the model's defaults are in it already.
    return {"spec": adapter_for(kind).server_fills(spec_dict(manifest)), "labels": labels}


def live_document(live: LiveResource) -> dict[str, Any]:
    """The live resource as a document comparable with ``desired_document``."""
    return {"spec": live.spec, "labels": live.labels}


def live_matches(desired_doc: Mapping[str, Any], live: LiveResource) -> bool:
    """True when ``live``, as the wire had it, is exactly ``desired_doc`` (from ``desired_document``).

    Then ``live_document(live)`` equals ``desired_doc`` too, without making it: a desired spec is
    a dump of its kind's model plus what the service fills in, and such a dump goes through the
    model unchanged (``tests/plan/test_live_matches.py`` holds this). False means only "compare
    canonically" (``compare``).
    """
    return _identical(desired_doc, wire_document(live))


def wire_document(live: LiveResource) -> dict[str, Any]:
    """The live resource as the wire had it (its spec not put through the model): equal to
    ``live_document(live)`` when ``live_matches`` said so."""
    return {"spec": live.wire_spec, "labels": live.labels}


# Values orjson would write as JSON but the standard library refuses (dataclasses, datetimes, str
# subclasses such as enums) raise instead, so they take the canonical path as before.
_EXACT = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_EXACT |= orjson.OPT_PASSTHROUGH_SUBCLASS


def _identical(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when both documents ({"spec", "labels"}) have the same sorted-key JSON: then they are
    the same data (types included: ``1``, ``1.0`` and ``true`` are written differently), so their
    canonical forms, with any pointers removed from both, are equal too. False means "compare
    canonically": set-like lists in another order, or a value orjson cannot write exactly (it
    refuses big integers and writes NaN and infinities as null, so any null goes that way too)."""
    try:
        left = orjson.dumps((a.get("spec") or {}, a.get("labels") or {}), option=_EXACT)
        right = orjson.dumps((b.get("spec") or {}, b.get("labels") or {}), option=_EXACT)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return False
    return left == right and b"null" not in left


def _comparable(doc: Mapping[str, Any], kind: Kind, ignore: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = canonical({"spec": doc.get("spec") or {}, "labels": doc.get("labels") or {}}, kind)
    for pointer in ignore:
        pointers.remove_matches(out["spec"], pointers.split(pointer))
    return out


# --- Comparison ---------------------------------------------------------------------------------


def deep_diff(before: Any, after: Any) -> list[tuple[list[str | int], FieldChange]]:
    """The leaves that differ between two canonical documents, each with its path as segments
    (a seam: tests count calls through it).

    A plain walk names changed, added and removed mapping entries and scalars (13 µs for a
    changed resource, where DeepDiff took ~0.9 ms). Lists whose items differ are handed to
    DeepDiff, whose sequence matching names inserted and removed items the way a reader expects
    ([a, b, c] -> [a, c]: "[1] removed", not "[1] changed, [2] removed"); that is where it earns
    its cost, and only the differing list is given to it.
    """
    found: list[tuple[list[str | int], FieldChange]] = []
    _walk(before, after, [], found)
    return found


def _walk(
    before: Any, after: Any, at: list[str | int], found: list[tuple[list[str | int], FieldChange]]
) -> None:
    if type(before) is not type(after):
        found.append((at, FieldChange(pointers.join(at), before, after, "changed")))
    elif isinstance(before, dict):
        for key, value in before.items():
            if key not in after:
                where = [*at, key]
                found.append((where, FieldChange(pointers.join(where), value, None, "removed")))
            else:
                _walk(value, after[key], [*at, key], found)
        for key, value in after.items():
            if key not in before:
                where = [*at, key]
                found.append((where, FieldChange(pointers.join(where), None, value, "added")))
    elif isinstance(before, list):
        if before != after:
            found.extend(_list_changes(before, after, at))
    elif before != after:
        found.append((at, FieldChange(pointers.join(at), before, after, "changed")))


def _list_changes(
    before: list[Any], after: list[Any], at: list[str | int]
) -> list[tuple[list[str | int], FieldChange]]:
    from deepdiff import DeepDiff  # imported on first use: most plans never differ in a list

    # threshold_to_diff_deeper=0: always name the leaves, never "this whole mapping changed"
    # (DeepDiff's default does that when few keys are shared, e.g. labels {} -> {a: b}).
    tree = DeepDiff(before, after, view="tree", verbose_level=2, threshold_to_diff_deeper=0)
    changes = []
    for report, items in tree.items():
        kind = _REPORT_KINDS.get(report)
        if kind is None:  # set/attribute reports cannot occur in JSON documents
            continue
        for item in items:
            where = [*at, *item.path(output_format="list")]
            old = None if kind == "added" else item.t1
            new = None if kind == "removed" else item.t2
            changes.append((where, FieldChange(pointers.join(where), old, new, kind)))
    return changes


def _field_changes(found: list[tuple[list[str | int], FieldChange]]) -> tuple[FieldChange, ...]:
    ordered = sorted(found, key=lambda c: [(0, s, "") if isinstance(s, int) else (1, 0, s) for s in c[0]])
    return tuple(c for _, c in ordered)


def line_diff(before: str, after: str, name: str) -> str:
    """Unified line diff live -> git of one text field ("" when equal)."""
    lines = []
    for line in difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"live/{name}", f"git/{name}"
    ):
        if line.endswith("\n"):
            lines.append(line[:-1])
        else:
            lines.extend((line.rstrip("\r"), "\\ No newline at end of file"))
    return "\n".join(lines)


def templates(spec: Mapping[str, Any]) -> dict[str, str]:
    """A prompt spec's texts by field name: "template" and each "variants/<name>/template"."""
    out = {}
    if isinstance(spec.get("template"), str):
        out["template"] = spec["template"]
    for variant in spec.get("variants") or []:
        if isinstance(variant, dict) and isinstance(variant.get("template"), str):
            out[f"variants/{variant.get('name')}/template"] = variant["template"]
    return out


def _template_diffs(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, str]:
    old, new = templates(before), templates(after)
    diffs = {}
    for name in sorted(old.keys() | new.keys(), key=lambda n: (n != "template", n)):
        if old.get(name) != new.get(name):
            diffs[name] = line_diff(old.get(name, ""), new.get(name, ""), name)
    return diffs


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _narrowed(before: Any, after: Any, pointer: str, label: str) -> list[BreakingChange]:
    """Ways one parameter's schema (live ``before`` -> git ``after``) rejects what it accepted."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    if before.get("type") != after.get("type"):
        return [
            BreakingChange(
                f"{pointer}/type",
                f"parameter '{label}' type changed from "
                f"{_text(before.get('type'))} to {_text(after.get('type'))}",
            )
        ]
    found = []
    if "enum" in after and "enum" not in before:
        found.append(BreakingChange(f"{pointer}/enum", f"parameter '{label}' enum added"))
    elif isinstance(after.get("enum"), list) and isinstance(before.get("enum"), list):
        gone = [v for v in before["enum"] if v not in after["enum"]]
        if gone:
            values = ", ".join(_text(v) for v in gone)
            found.append(
                BreakingChange(f"{pointer}/enum", f"parameter '{label}' enum value(s) {values} removed")
            )
    for bound in _UPPER_BOUNDS:
        old, new = before.get(bound), after.get(bound)
        if isinstance(new, int | float) and (not isinstance(old, int | float) or new < old):
            was = "none" if old is None else _text(old)
            found.append(
                BreakingChange(
                    f"{pointer}/{bound}", f"parameter '{label}' {bound} lowered from {was} to {_text(new)}"
                )
            )
    for bound in _LOWER_BOUNDS:
        old, new = before.get(bound), after.get(bound)
        if isinstance(new, int | float) and (not isinstance(old, int | float) or new > old):
            was = "none" if old is None else _text(old)
            found.append(
                BreakingChange(
                    f"{pointer}/{bound}", f"parameter '{label}' {bound} raised from {was} to {_text(new)}"
                )
            )
    if after.get("type") == "object":
        found.extend(_breaking(before, after, pointer, f"{label}."))
    elif after.get("type") == "array":
        found.extend(_narrowed(before.get("items"), after.get("items"), f"{pointer}/items", f"{label}[]"))
    return found


def _breaking(before: Any, after: Any, pointer: str, prefix: str = "") -> list[BreakingChange]:
    """Breaking changes between two object schemas (live ``before`` -> git ``after``)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    old: dict[str, Any] = before["properties"] if isinstance(before.get("properties"), dict) else {}
    new: dict[str, Any] = after["properties"] if isinstance(after.get("properties"), dict) else {}
    was_required = set(before.get("required") or ())
    required = set(after.get("required") or ())
    found = []
    for name in sorted(old.keys() | new.keys()):
        where = f"{pointer}/properties/{pointers.escape(name)}"
        label = f"{prefix}{name}"
        if name not in new:
            found.append(BreakingChange(where, f"parameter '{label}' removed"))
        elif name not in old:
            if name in required:
                found.append(BreakingChange(where, f"required parameter '{label}' added"))
        else:
            if name in required and name not in was_required:
                found.append(BreakingChange(where, f"parameter '{label}' became required"))
            found.extend(_narrowed(old[name], new[name], where, label))
    return found


def compare(
    desired_doc: Mapping[str, Any],
    live_doc: Mapping[str, Any],
    kind: Kind,
    ignore_pointers: Sequence[str] = (),
) -> ResourceDiff:
    """How ``live_doc`` differs from ``desired_doc`` (both {"spec", "labels"}, desired already
    through ``with_server_defaults``), ``ignore_pointers`` (relative to the spec) left out.

    Fingerprints decide equality; only when they differ does DeepDiff name the fields, templates
    get line diffs, and (for functions) parameter changes get classified as breaking.
    """
    if _identical(desired_doc, live_doc):
        return ResourceDiff()
    after = _comparable(desired_doc, kind, ignore_pointers)
    before = _comparable(live_doc, kind, ignore_pointers)
    if _digest(after) == _digest(before):
        return ResourceDiff()
    fields = _field_changes(deep_diff(before, after))
    templates = _template_diffs(before["spec"], after["spec"]) if kind is Kind.PROMPT else {}
    breaking: tuple[BreakingChange, ...] = ()
    if kind is Kind.FUNCTION_DEFINITION:
        breaking = tuple(
            _breaking(before["spec"].get("parameters"), after["spec"].get("parameters"), "/spec/parameters")
        )
    return ResourceDiff(fields, templates, breaking)
