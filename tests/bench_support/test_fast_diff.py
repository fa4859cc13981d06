"""The plain walk that names changed fields gives exactly what DeepDiff gave on whole documents."""

from __future__ import annotations

import random
from typing import Any

from deepdiff import DeepDiff

from reconciler import diff, pointers
from reconciler.diff import _REPORT_KINDS, FieldChange


def deepdiff_changes(before: Any, after: Any) -> tuple[FieldChange, ...]:
    """What compare reported before the walk: DeepDiff over the whole document."""
    tree = DeepDiff(before, after, view="tree", verbose_level=2, threshold_to_diff_deeper=0)
    found = []
    for report, items in tree.items():
        kind = _REPORT_KINDS.get(report)
        if kind is None:
            continue
        for item in items:
            at = item.path(output_format="list")
            old = None if kind == "added" else item.t1
            new = None if kind == "removed" else item.t2
            found.append((at, FieldChange(pointers.join(at), old, new, kind)))
    return diff._field_changes(found)


def value(rng: random.Random, depth: int) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.4:
        return rng.choice([0, 1, 2, True, False, None, "a", "b", 1.5, "x/y", "~"])
    if r < 0.7:
        return {rng.choice("abcde"): value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def mutate(rng: random.Random, v: Any, depth: int = 0) -> Any:
    if isinstance(v, dict):
        out = dict(v)
        for k in list(out):
            r = rng.random()
            if r < 0.15:
                del out[k]
            elif r < 0.5:
                out[k] = mutate(rng, out[k], depth + 1)
        if rng.random() < 0.2:
            out[rng.choice("fghab")] = value(rng, depth + 1)
        return out
    if isinstance(v, list):
        items = [mutate(rng, x, depth + 1) if rng.random() < 0.4 else x for x in v]
        if rng.random() < 0.2:
            items.insert(rng.randint(0, len(items)), value(rng, depth + 1))
        if items and rng.random() < 0.2:
            items.pop(rng.randrange(len(items)))
        return items
    return value(rng, depth) if rng.random() < 0.5 else v


def test_walk_matches_deepdiff_on_random_documents() -> None:
    rng = random.Random(20261123)
    for _ in range(1500):
        before = {"spec": value(rng, 0), "labels": value(rng, 1)}
        after = mutate(rng, before)
        assert diff._field_changes(diff.deep_diff(before, after)) == deepdiff_changes(before, after)


def test_leaves_are_named_and_types_count() -> None:
    before = {"labels": {}, "spec": {"a": 1, "b": {"c": True}, "l": [1, 2, 3, 4]}}
    after = {"labels": {"x": "y"}, "spec": {"a": 1.5, "b": {"c": 1}, "l": [1, 3, 4]}}
    changes = diff._field_changes(diff.deep_diff(before, after))
    assert [(c.path, c.kind) for c in changes] == [
        ("/labels/x", "added"),
        ("/spec/a", "changed"),
        ("/spec/b/c", "changed"),
        ("/spec/l/1", "removed"),
    ]
