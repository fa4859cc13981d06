"""JSON pointers (RFC 6901) as reconciler.yaml uses them: one splitter and the walks built on it.

``ignoreDifferences`` and ``sensitive`` name fields with pointers relative to a spec, where a
``*`` segment stands for every key or index at that level; plans name changed fields with plain
pointers. Diff, redaction and rendering all read pointers through this module, so they agree on
what a pointer means. Pure functions over plain JSON data; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WILDCARD = "*"
MISSING: Any = object()  # what ``get`` returns when the path is not there


def split(pointer: str) -> tuple[str, ...]:
    """The segments of a pointer, unescaped (``~1`` is ``/``, ``~0`` is ``~``); ``""`` and ``"/"``
    both name the whole document."""
    if pointer in ("", "/"):
        return ()
    return tuple(s.replace("~1", "/").replace("~0", "~") for s in pointer[1:].split("/"))


def escape(segment: str | int) -> str:
    """One segment as it is written inside a pointer."""
    return str(segment).replace("~", "~0").replace("/", "~1")


def join(segments: Iterable[str | int]) -> str:
    """The pointer naming ``segments`` (the inverse of ``split``)."""
    return "".join(f"/{escape(s)}" for s in segments)


def _index(node: list[Any], segment: str) -> int | None:
    return int(segment) if segment.isdigit() and int(segment) < len(node) else None


def get(doc: Any, pointer: str) -> Any:
    """The value at ``pointer``, or ``MISSING``. A scalar met before the path ends is returned as
    is: redaction replaces a whole subtree by its marker, and the marker is what is there."""
    node = doc
    for segment in split(pointer):
        if isinstance(node, dict):
            if segment not in node:
                return MISSING
            node = node[segment]
        elif isinstance(node, list):
            index = _index(node, segment)
            if index is None:
                return MISSING
            node = node[index]
        else:
            return node
    return node


def replace_matches(node: Any, segments: tuple[str, ...], change: Callable[[Any], Any]) -> Any:
    """A copy of ``node`` with ``change`` applied to every value the segments match (``*`` matches
    every key or index); ``node`` itself is not modified."""
    if not segments:
        return change(node)
    head, rest = segments[0], segments[1:]
    if isinstance(node, dict):
        if head == WILDCARD:
            return {k: replace_matches(v, rest, change) for k, v in node.items()}
        if head in node:
            return {**node, head: replace_matches(node[head], rest, change)}
    elif isinstance(node, list):
        if head == WILDCARD:
            return [replace_matches(v, rest, change) for v in node]
        index = _index(node, head)
        if index is not None:
            return [*node[:index], replace_matches(node[index], rest, change), *node[index + 1 :]]
    return node


def remove_matches(node: Any, segments: tuple[str, ...]) -> None:
    """Delete, in place, every value the segments match (``*`` matches every key or index)."""
    if not segments:
        return
    head, rest = segments[0], segments[1:]
    if isinstance(node, dict):
        for key in list(node) if head == WILDCARD else [head] if head in node else []:
            if rest:
                remove_matches(node[key], rest)
            else:
                del node[key]
    elif isinstance(node, list):
        index = _index(node, head)
        indexes = range(len(node)) if head == WILDCARD else [] if index is None else [index]
        for i in reversed(indexes):
            if rest:
                remove_matches(node[i], rest)
            else:
                del node[i]
