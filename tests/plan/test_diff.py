"""Normalization and comparison of one resource (reconciler.diff)."""

from __future__ import annotations

from typing import Any

from reconciler.diff import canonical, compare, fingerprint, line_diff
from reconciler.models import Kind


def doc(spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"spec": spec, "labels": labels or {}}


def fn(parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return doc({"name": "f", "description": "d", "timeoutMillis": 1, "parameters": parameters, **extra})


def test_set_like_lists_are_sorted_at_every_level_and_nothing_else() -> None:
    params = {
        "type": "object",
        "required": ["b", "a"],
        "properties": {
            "required": {"type": "object", "required": ["z", "y"], "properties": {}},
            "e": {"type": "string", "enum": ["z", "a"]},
        },
    }
    out = canonical(fn(params), Kind.FUNCTION_DEFINITION)["spec"]["parameters"]
    assert out["required"] == ["a", "b"]
    # A property that happens to be called "required" is a schema, and its own required is a set.
    assert out["properties"]["required"]["required"] == ["y", "z"]
    assert out["properties"]["e"]["enum"] == ["z", "a"]  # enum order is meaningful: kept
    assert canonical(doc({"functions": ["b", "a"]}), Kind.PROMPT)["spec"]["functions"] == ["a", "b"]
    assert canonical(doc({"metadataFields": ["b", "a"]}), Kind.CONTEXT_POLICY)["spec"]["metadataFields"] == [
        "a",
        "b",
    ]
    assert canonical(doc({"variables": [{"name": "b"}, {"name": "a"}]}), Kind.PROMPT)["spec"]["variables"][
        0
    ] == {"name": "b"}


def test_fingerprint_ignores_key_order_set_order_and_integral_floats() -> None:
    a = fn({"type": "object", "required": ["x", "y"], "properties": {"x": {"type": "number", "maximum": 5}}})
    b = fn(
        {"properties": {"x": {"maximum": 5.0, "type": "number"}}, "required": ["y", "x"], "type": "object"}
    )
    assert fingerprint(a) == fingerprint(b) == fingerprint(a, Kind.FUNCTION_DEFINITION)
    assert fingerprint(a) != fingerprint(fn({"type": "object", "properties": {}}))


def test_reordered_enum_is_a_non_breaking_update() -> None:
    live = fn({"type": "object", "properties": {"u": {"type": "string", "enum": ["a", "b"], "maxLength": 9}}})
    desired = fn(
        {"type": "object", "properties": {"u": {"type": "string", "enum": ["b", "a"], "maxLength": 9}}}
    )
    result = compare(desired, live, Kind.FUNCTION_DEFINITION)
    assert result and result.breaking == ()
    assert [f.path for f in result.fields] == [
        "/spec/parameters/properties/u/enum/0",
        "/spec/parameters/properties/u/enum/1",
    ]


def test_equal_documents_compare_empty() -> None:
    same = fn({"type": "object", "properties": {}})
    result = compare(same, same, Kind.FUNCTION_DEFINITION)
    assert not result and result.fields == () and result.template_diffs == {}


def test_ignore_pointers_remove_from_both_sides_with_wildcards_and_indexes() -> None:
    live = doc(
        {
            "template": "x",
            "variants": [
                {"name": "A", "template": "1", "weight": 50},
                {"name": "B", "template": "2", "weight": 50},
            ],
        }
    )
    desired = doc(
        {
            "template": "y",
            "variants": [
                {"name": "A", "template": "3", "weight": 50},
                {"name": "B", "template": "4", "weight": 50},
            ],
        }
    )
    assert not compare(desired, live, Kind.PROMPT, ["/template", "/variants/*/template"])
    only_first = compare(desired, live, Kind.PROMPT, ["/template", "/variants/0/template"])
    assert [f.path for f in only_first.fields] == ["/spec/variants/1/template"]
    assert list(only_first.template_diffs) == ["variants/B/template"]


def test_field_paths_are_json_pointers_with_escapes() -> None:
    result = compare(doc({}, {"a/b": "1", "t~x": "2"}), doc({}, {}), Kind.PROMPT)
    assert [(f.path, f.kind, f.after) for f in result.fields] == [
        ("/labels/a~1b", "added", "1"),
        ("/labels/t~0x", "added", "2"),
    ]


def test_list_items_are_reported_added_and_removed() -> None:
    result = compare(
        doc({"metadataFields": ["a", "c"]}), doc({"metadataFields": ["a", "b", "c"]}), Kind.CONTEXT_POLICY
    )
    assert [(f.path, f.kind, f.before) for f in result.fields] == [("/spec/metadataFields/1", "removed", "b")]


def test_line_diff_marks_a_missing_final_newline() -> None:
    text = line_diff("a\nb", "a\nc\n", "template")
    assert text.splitlines() == [
        "--- live/template",
        "+++ git/template",
        "@@ -1,2 +1,2 @@",
        " a",
        "-b",
        "\\ No newline at end of file",
        "+c",
    ]
    assert line_diff("same", "same", "template") == ""


def test_breaking_in_array_items_and_widening_is_fine() -> None:
    live = fn(
        {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 50}, "maxItems": 3},
                "n": {"type": "integer", "maximum": 5},
            },
        }
    )
    desired = fn(
        {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 10},
                "n": {"type": "integer"},
            },
        }
    )
    result = compare(desired, live, Kind.FUNCTION_DEFINITION)
    assert [(b.path, b.reason) for b in result.breaking] == [
        (
            "/spec/parameters/properties/tags/items/maxLength",
            "parameter 'tags[]' maxLength lowered from 50 to 20",
        )
    ]


def test_the_byte_equal_fast_path_decides_nothing_the_canonical_path_would_not() -> None:
    """``compare`` first checks whether both documents have the same sorted-key JSON; every case
    where that shortcut could be wrong must still be decided by the canonical comparison."""
    base = fn({"type": "object", "properties": {"x": {"type": "number", "maximum": 5}}})
    same_data_other_key_order = fn({"properties": {"x": {"maximum": 5, "type": "number"}}, "type": "object"})
    assert not compare(base, same_data_other_key_order, Kind.FUNCTION_DEFINITION)
    # Equal once canonical, different as bytes: the canonical path still says "no change".
    assert not compare(
        base,
        fn({"type": "object", "properties": {"x": {"type": "number", "maximum": 5.0}}}),
        Kind.FUNCTION_DEFINITION,
    )
    assert not compare(doc({"functions": ["a", "b"]}), doc({"functions": ["b", "a"]}), Kind.PROMPT)
    # Python's == says True == 1 and NaN != NaN; orjson writes NaN as null: none of it is "identical".
    assert compare(doc({"maxTokens": True}), doc({"maxTokens": 1}), Kind.PROMPT)
    assert compare(doc({"x": float("nan")}), doc({"x": None}), Kind.PROMPT)
    assert compare(doc({"x": 2**70}), doc({"x": 2**70 + 1}), Kind.PROMPT)
    assert not compare(doc({"x": 2**70}), doc({"x": 2**70}), Kind.PROMPT)
    assert compare(doc({}, {"team": "a"}), doc({}, {"team": "b"}), Kind.PROMPT)
