"""Keeping secrets out of every output: one ``Redactor`` used by all printers and writers.

Two things are hidden. Secret values (the client secret, tokens, webhook secrets) are replaced by
``***`` wherever they occur in any string. Fields marked sensitive in reconciler.yaml are replaced
by ``(sensitive, sha256:<12 hex>)``: the hash lets a reviewer see THAT a value changed without
seeing it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.models import Kind, ProjectConfig

# Shorter strings are too likely to occur by chance: replacing them would garble output.
MIN_SECRET_LENGTH = 4


def sensitive_marker(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"(sensitive, sha256:{hashlib.sha256(text.encode()).hexdigest()[:12]})"


def _mask_pointer(node: Any, parts: list[str]) -> Any:
    if not parts:
        return sensitive_marker(node)
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict):
        if head == "*":
            return {k: _mask_pointer(v, rest) for k, v in node.items()}
        if head in node:
            return {**node, head: _mask_pointer(node[head], rest)}
    if isinstance(node, list):
        if head == "*":
            return [_mask_pointer(v, rest) for v in node]
        if head.isdigit() and int(head) < len(node):
            i = int(head)
            return [*node[:i], _mask_pointer(node[i], rest), *node[i + 1 :]]
    return node


@dataclass(frozen=True)
class Redactor:
    secrets: tuple[str, ...] = ()
    sensitive: Mapping[Kind, tuple[str, ...]] = field(default_factory=dict)

    def text(self, s: str) -> str:
        for secret in self.secrets:
            s = s.replace(secret, "***")
        return s

    def value(self, obj: Any) -> Any:
        if not self.secrets:
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return obj

    def resource(self, kind: Kind, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec with sensitive fields (JSON pointers, ``*`` for any key or index) masked."""
        out = spec
        for pointer in self.sensitive.get(kind, ()):
            parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.strip("/").split("/")]
            out = _mask_pointer(out, parts)
        return dict(self.value(out))


def from_project(config: ProjectConfig, secret_values: Iterable[str | None]) -> Redactor:
    sensitive: dict[Kind, tuple[str, ...]] = {}
    for entry in config.sensitive:
        sensitive[entry.kind] = sensitive.get(entry.kind, ()) + tuple(entry.json_pointers)
    secrets = tuple(
        sorted({s for s in secret_values if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
    )
    return Redactor(secrets, sensitive)


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record's message through a Redactor."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.text(record.getMessage())
        record.args = None
        return True
