"""Keeping secrets out of every output: one ``Redactor`` used by all printers and writers.

Two things are hidden. Secret values (the client secret, tokens, webhook secrets) are replaced by
``***`` wherever they occur in any string. Fields marked sensitive in reconciler.yaml are replaced
by ``(sensitive, sha256:<12 hex>)``: the hash lets a reviewer see THAT a value changed without
seeing it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

from reconciler import pointers
from reconciler.models import Kind, ProjectConfig

# Shorter strings are too likely to occur by chance: replacing them would garble output.
MIN_SECRET_LENGTH = 4


SECRET_MASK = "***"
SENSITIVE_PREFIX = "(sensitive, sha256:"


def sensitive_marker(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{SENSITIVE_PREFIX}{hashlib.sha256(text.encode()).hexdigest()[:12]})"


def holds_redaction(doc: Any) -> bool:
    """Whether any value in ``doc`` was masked (a secret or a sensitive field): such a document
    cannot be written back, since the real value is not in it."""
    if isinstance(doc, dict):
        return any(holds_redaction(v) for v in doc.values())
    if isinstance(doc, list):
        return any(holds_redaction(v) for v in doc)
    return isinstance(doc, str) and (doc.startswith(SENSITIVE_PREFIX) or SECRET_MASK in doc)


@dataclass(frozen=True)
class Redactor:
    secrets: tuple[str, ...] = ()
    sensitive: Mapping[Kind, tuple[str, ...]] = field(default_factory=dict)

    def text(self, s: str) -> str:
        for secret in self.secrets:
            s = s.replace(secret, SECRET_MASK)
        return s

    @cached_property
    def _encoded_secrets(self) -> tuple[bytes, ...] | None:
        # Each secret as it appears inside a JSON string: escaping works character by character,
        # so a string holding a secret holds its escaped form once encoded. None: a secret JSON
        # cannot hold (a lone surrogate from an undecodable environment variable): always walk.
        try:
            return tuple(orjson.dumps(secret)[1:-1] for secret in self.secrets)
        except orjson.JSONEncodeError:
            return None

    def _cannot_hold_secret(self, obj: Any) -> bool:
        """Whether ``obj`` is JSON data in which no key or string holds a secret: one search of
        its encoding instead of a walk that copies every string (a journal record per write)."""
        secrets = self._encoded_secrets
        if secrets is None:
            return False
        try:
            encoded = orjson.dumps(obj)
        except (TypeError, orjson.JSONEncodeError):  # not plain JSON data: walk it
            return False
        return not any(secret in encoded for secret in secrets)

    def value(self, obj: Any) -> Any:
        """``obj`` with every secret masked in its strings and keys (itself when there is none)."""
        if not self.secrets or (isinstance(obj, dict | list) and self._cannot_hold_secret(obj)):
            return obj
        return self._walk(obj)

    def _walk(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.text(k) if isinstance(k, str) else k: self._walk(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self._walk(v) for v in obj]
        return obj

    def resource(self, kind: Kind, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec with sensitive fields (JSON pointers, ``*`` for any key or index) masked."""
        out = spec
        for pointer in self.sensitive.get(kind, ()):
            out = pointers.replace_matches(out, pointers.split(pointer), sensitive_marker)
        return dict(self.value(out))


def from_project(config: ProjectConfig, secret_values: Iterable[str | None]) -> Redactor:
    sensitive: dict[Kind, tuple[str, ...]] = {}
    for entry in config.sensitive:
        sensitive[entry.kind] = sensitive.get(entry.kind, ()) + tuple(entry.json_pointers)
    secrets = tuple(
        sorted({s for s in secret_values if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
    )
    return Redactor(secrets, sensitive)
