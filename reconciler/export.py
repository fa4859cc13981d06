"""Export: manifests from a live org, so an existing org can be adopted (pure: no I/O).

Each live resource becomes one manifest document in a stable field order (the models' order),
with server-managed fields and server defaults left out, and references already expressed by
name. Planning the exported manifests against the same org shows no changes: a resource this
project does not manage yet is marked with the no-adopt annotation, so its labels stay as they
are until someone removes the annotation (or exports with ``adopt=True``): then the next apply
labels it as managed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from reconciler.kinds import DEFAULT_STRING_MAX_LENGTH
from reconciler.models import (
    API_VERSION,
    MANAGED_BY_LABEL,
    MANIFEST_MODELS,
    NO_ADOPT_ANNOTATION,
    Kind,
    LiveResource,
)

# Prompt names are free text; file names keep only what every filesystem accepts.
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
FOLDERS = {Kind.FUNCTION_DEFINITION: "functions", Kind.PROMPT: "prompts", Kind.CONTEXT_POLICY: "policies"}
SCHEMAS = {
    Kind.FUNCTION_DEFINITION: "functiondefinition",
    Kind.PROMPT: "prompt",
    Kind.CONTEXT_POLICY: "contextpolicy",
}


@dataclass(frozen=True)
class ExportedFile:
    path: str  # relative to the output folder
    text: str


def _drop_string_defaults(schema: Any) -> Any:
    """Leave out the maxLength the service adds to strings; planning adds it back."""
    if isinstance(schema, list):
        return [_drop_string_defaults(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _drop_string_defaults(v) if k == "items" else v for k, v in schema.items()}
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: _drop_string_defaults(v) for k, v in schema["properties"].items()}
    if out.get("type") == "string" and out.get("maxLength") == DEFAULT_STRING_MAX_LENGTH:
        del out["maxLength"]
    return out


def manifest_document(live: LiveResource, project: str, adopt: bool) -> dict[str, Any]:
    """The manifest for one live resource, as plain data in the models' field order."""
    model = MANIFEST_MODELS[live.key.kind]
    spec = dict(live.spec)
    if live.key.kind is Kind.FUNCTION_DEFINITION and isinstance(spec.get("parameters"), dict):
        spec["parameters"] = _drop_string_defaults(spec["parameters"])
    managed = live.labels.get(MANAGED_BY_LABEL) == project
    labels = {k: v for k, v in sorted(live.labels.items()) if k != MANAGED_BY_LABEL or not managed}
    metadata: dict[str, Any] = {"name": live.key.name, "labels": labels}
    if not managed and not adopt:
        metadata["annotations"] = {NO_ADOPT_ANNOTATION: "false"}
    document = {"apiVersion": API_VERSION, "kind": live.key.kind.value, "metadata": metadata, "spec": spec}
    # Through the model: the field order becomes the model's, and defaults are left out. A live
    # body the model rejects (written out of band) is exported as it is, so validate points at it.
    try:
        parsed = model.model_validate(document)
    except ValidationError:
        return document
    return parsed.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True) | {
        "apiVersion": API_VERSION,
        "kind": live.key.kind.value,
    }


def _ordered(document: dict[str, Any]) -> dict[str, Any]:
    head = {k: document[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in document}
    return head | {k: v for k, v in document.items() if k not in head}


class _Dumper(yaml.SafeDumper):
    """YAML as people write manifests: a multi-line string (a template) as a literal block."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value and not any(ch in value for ch in "\r\t") and value == value.rstrip(" "):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _string)


def export_files(
    live: Sequence[LiveResource],
    project: str,
    *,
    adopt: bool = False,
    kinds: Sequence[Kind] = tuple(Kind),
    schemas: str = "../../schemas",
) -> list[ExportedFile]:
    """One YAML file per live resource of the given kinds, sorted by path. ``schemas`` is the
    schemas folder as seen from a kind's folder under the output folder (for editors' $schema)."""
    files = []
    for resource in sorted(live, key=lambda r: (r.key.kind.value, r.key.name)):
        if resource.key.kind not in kinds:
            continue
        document = _ordered(manifest_document(resource, project, adopt))
        modeline = f"# yaml-language-server: $schema={schemas}/{SCHEMAS[resource.key.kind]}.schema.json\n"
        body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
        filename = _SAFE.sub("-", resource.key.name).strip("-.") or "unnamed"
        files.append(ExportedFile(f"{FOLDERS[resource.key.kind]}/{filename}.yaml", modeline + body))
    return files
