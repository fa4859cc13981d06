"""YAML manifests and reconciler.yaml into models, with every problem located as file:line:col.

Loading is safe (no arbitrary tags) and strict where PyYAML is lenient: duplicate keys are
errors (PyYAML keeps the last silently), alias expansion is bounded (no "billion laughs"), files
are size-limited and must be UTF-8, and unknown fields are errors (a typo is never ignored).
Problems are collected across ALL files and raised together as one ``ManifestError``, the way
Terraform collects diagnostics, so `validate` shows everything in one run.

This module reads files and nothing else: no network, no clock.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from reconciler.errors import ManifestError, Problem
from reconciler.models import (
    API_VERSION,
    MANIFEST_MODELS,
    REGIONS,
    ContextPolicy,
    FunctionDefinition,
    Kind,
    ProjectConfig,
    Prompt,
    ResourceKey,
    key_of,
)

MAX_FILE_BYTES = 1024 * 1024
# Nodes produced while building one document, aliases included: far above any real manifest,
# far below what an alias bomb expands to.
MAX_NODES = 200_000
PROJECT_FILE = "reconciler.yaml"
_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_KEYS = {"clientsecret", "secret", "token", "accesstoken", "password", "apikey"}

try:  # libyaml's parser is several times faster and gives the same marks
    _BaseLoader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader

Manifest = FunctionDefinition | Prompt | ContextPolicy


@dataclass(frozen=True)
class Source:
    file: str
    line: int
    col: int


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    source: Source
    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: str) -> tuple[int, int]:
        """Line and column of a dotted field path, or of its nearest located parent."""
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path.rsplit(".", 1)[0] if "." in path else ""
        return self.source.line, self.source.col


@dataclass(frozen=True)
class ManifestSet:
    manifests: tuple[LoadedManifest, ...]
    digest: str

    def by_key(self) -> dict[ResourceKey, LoadedManifest]:
        return {key_of(m.manifest): m for m in self.manifests}


class _Document:
    """Builds plain data from a composed YAML node, recording where each field path starts."""

    def __init__(
        self, file: str, loader: yaml.SafeLoader, variables: Mapping[str, str] | None, problems: list[Problem]
    ) -> None:
        self.file, self.loader, self.variables, self.problems = file, loader, variables, problems
        self.positions: dict[str, tuple[int, int]] = {}
        self.nodes = 0

    def problem(self, node: yaml.Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, message, path))

    def build(self, node: yaml.Node, path: str = "") -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooLarge(node)
        self.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.problem(key_node, path, "merge keys (<<) are not supported in manifests")
                    continue
                key = self.loader.construct_object(key_node)
                if not isinstance(key, str):
                    self.problem(key_node, path, f"mapping keys must be strings, got {key!r}")
                    continue
                child = f"{path}.{key}" if path else key
                if key in out:
                    first = self.positions.get(child, (0, 0))[0]
                    self.problem(key_node, child, f"duplicate key {key!r} (first defined on line {first})")
                    continue
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        value = self.loader.construct_object(node)
        if isinstance(value, str) and self.variables is not None and "$" in value:
            value = self._substitute(node, path, value)
        return value

    def _substitute(self, node: yaml.Node, path: str, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            escaped, name = match.group(1), match.group(2)
            if escaped:
                return "${" + name + "}"
            assert self.variables is not None
            if name not in self.variables:
                known = ", ".join(sorted(self.variables)) or "none defined"
                self.problem(node, path, f"undefined variable ${{{name}}} (environment variables: {known})")
                return match.group(0)
            return self.variables[name]

        return _VAR.sub(replace, text)


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _read(path: Path, problems: list[Problem]) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(str(path), 0, 0, f"cannot read: {exc.strerror or exc}"))
        return None
    if len(data) > MAX_FILE_BYTES:
        problems.append(Problem(str(path), 1, 1, f"file is {len(data)} bytes; the limit is {MAX_FILE_BYTES}"))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        problems.append(
            Problem(str(path), line, col, f"not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded")
        )
        return None


def parse_documents(
    file: str, text: str, variables: Mapping[str, str] | None, problems: list[Problem]
) -> Iterator[tuple[dict[str, Any], _Document, yaml.Node]]:
    """Each non-empty YAML document of a file as data, with its positions; syntax errors become problems."""
    loader = _BaseLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None or (isinstance(node, yaml.ScalarNode) and node.value == ""):
                continue
            doc = _Document(file, loader, variables, problems)
            try:
                data = doc.build(node)
            except _TooLarge as exc:
                doc.problem(
                    exc.node,
                    "",
                    f"document expands to more than {MAX_NODES} nodes (aliases/anchors nested too deep?)",
                )
                continue
            if not isinstance(data, dict):
                doc.problem(node, "", "a manifest must be a mapping with apiVersion, kind, metadata and spec")
                continue
            yield data, doc, node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problems.append(Problem(file, line, col, f"YAML syntax: {exc.problem or exc.context}"))
    except yaml.YAMLError as exc:
        problems.append(Problem(file, 0, 0, f"YAML: {exc}"))
    finally:
        loader.dispose()


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that owns the last element of a pydantic error location."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        by_alias = {f.alias or name: f for name, f in current.model_fields.items()}
        info = by_alias.get(part)
        if info is None:
            return None
        annotation = info.annotation
        candidates = [annotation, *get_args(annotation)]
        if get_origin(annotation) in (list, dict):
            candidates = list(get_args(annotation))
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        current = nested[0]
    return current


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(model: type[BaseModel], error: Any) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc)
        name = str(loc[-1])
        if owner is not None:
            known = [f.alias or n for n, f in owner.model_fields.items()]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known fields: {', '.join(known)})"
            return f"unknown field {name!r}{hint}"
        return f"unknown field {name!r}"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"must be one of {error['ctx']['expected']}, got {error.get('input')!r}"
    return (
        f"{error['msg']} (got {error.get('input')!r})"
        if "input" in error and not isinstance(error.get("input"), dict | list)
        else str(error["msg"])
    )


def validation_problems(model: type[BaseModel], data: Any, doc: _Document, prefix: str = "") -> list[Problem]:
    """Validate ``data`` against ``model``; each error located at its field's line and column."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = _dotted(tuple(error["loc"]))
            full = f"{prefix}.{path}" if prefix and path else prefix or path
            line, col = _locate(doc.positions, full)
            problems.append(Problem(doc.file, line, col, _message(model, error), full))
        return problems
    return []


def _locate(positions: Mapping[str, tuple[int, int]], path: str) -> tuple[int, int]:
    while True:
        if path in positions:
            return positions[path]
        if not path:
            return (1, 1)
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""


def _manifest_files(paths: Sequence[Path], problems: list[Problem]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.suffix in (".yaml", ".yml")
                and p.is_file()
                and p.name != PROJECT_FILE
                and "samples" not in p.relative_to(path).parts
            )
        else:
            problems.append(Problem(str(path), 0, 0, "no such file or folder"))
    return files


def load_manifests(paths: Sequence[Path], variables: Mapping[str, str] | None = None) -> ManifestSet:
    """Every manifest under ``paths``; raises ManifestError listing ALL problems."""
    manifests, problems = collect_manifests(paths, variables)
    if problems:
        raise ManifestError(problems)
    return manifests


def collect_manifests(
    paths: Sequence[Path], variables: Mapping[str, str] | None = None
) -> tuple[ManifestSet, list[Problem]]:
    """The manifests that loaded, and the problems of those that did not."""
    problems: list[Problem] = []
    loaded: list[LoadedManifest] = []
    seen: dict[ResourceKey, Source] = {}
    digest = hashlib.sha256(json.dumps(sorted((variables or {}).items())).encode())
    for file in _manifest_files(paths, problems):
        text = _read(file, problems)
        if text is None:
            continue
        digest.update(f"\0{file.as_posix()}\0".encode() + text.encode())
        for data, doc, node in parse_documents(str(file), text, variables or {}, problems):
            manifest = _manifest(data, doc, node, problems)
            if manifest is None:
                continue
            source = Source(doc.file, node.start_mark.line + 1, node.start_mark.column + 1)
            key = key_of(manifest)
            if key in seen:
                first = seen[key]
                problems.append(
                    Problem(
                        source.file,
                        source.line,
                        source.col,
                        f"{key} is defined twice (first at {first.file}:{first.line})",
                        "metadata.name",
                    )
                )
                continue
            seen[key] = source
            loaded.append(LoadedManifest(manifest, source, doc.positions))
    return ManifestSet(tuple(loaded), digest.hexdigest()), problems


def _manifest(
    data: dict[str, Any], doc: _Document, node: yaml.Node, problems: list[Problem]
) -> Manifest | None:
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if api_version != API_VERSION:
        where = "apiVersion" if "apiVersion" in data else ""
        line, col = _locate(doc.positions, where)
        problems.append(
            Problem(
                doc.file,
                line,
                col,
                f"unknown apiVersion {api_version!r} (expected {API_VERSION!r})",
                "apiVersion",
            )
        )
        return None
    if kind not in {k.value for k in Kind}:
        line, col = _locate(doc.positions, "kind" if "kind" in data else "")
        problems.append(
            Problem(
                doc.file,
                line,
                col,
                f"unknown kind {kind!r} (expected one of {', '.join(k.value for k in Kind)})",
                "kind",
            )
        )
        return None
    model = MANIFEST_MODELS[Kind(kind)]
    found = validation_problems(model, data, doc)
    if found:
        problems.extend(found)
        return None
    return model.model_validate(data)


def _secret_problems(data: Any, doc: _Document, path: str = "") -> Iterator[Problem]:
    if isinstance(data, dict):
        for key, value in data.items():
            child = f"{path}.{key}" if path else key
            if re.sub(r"[-_]", "", key).lower() in _SECRET_KEYS and value not in (None, ""):
                line, col = _locate(doc.positions, child)
                yield Problem(
                    doc.file,
                    line,
                    col,
                    "secrets are never accepted in files: name an environment "
                    "variable instead (credentials.clientSecretEnv, webhooks[].secretEnv)",
                    child,
                )
            else:
                yield from _secret_problems(value, doc, child)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from _secret_problems(item, doc, f"{path}[{i}]")


def load_project(path: Path | None = None) -> tuple[ProjectConfig, Path | None]:
    """reconciler.yaml (``path``, or ./reconciler.yaml when present; defaults otherwise)."""
    if path is None:
        candidate = Path(PROJECT_FILE)
        if not candidate.is_file():
            return ProjectConfig(), None
        path = candidate
    problems: list[Problem] = []
    text = _read(path, problems)
    documents = list(parse_documents(str(path), text, None, problems)) if text is not None else []
    if not problems and len(documents) != 1:
        problems.append(Problem(str(path), 1, 1, "the project file must hold exactly one YAML document"))
    if problems:
        raise ManifestError(problems)
    data, doc, _ = documents[0]
    problems.extend(_secret_problems(data, doc))
    if not problems:
        problems.extend(validation_problems(ProjectConfig, data, doc))
    if problems:
        raise ManifestError(problems)
    config = ProjectConfig.model_validate(data)
    for name, env in config.environments.items():
        where = f"environments.{name}"
        line, col = _locate(doc.positions, where)
        chosen = [
            k for k, v in (("region", env.region), ("baseUrl", env.base_url), ("embedded", env.embedded)) if v
        ]
        if len(chosen) != 1:
            problems.append(
                Problem(
                    str(path),
                    line,
                    col,
                    f"set exactly one of region, baseUrl, embedded (found: {', '.join(chosen) or 'none'})",
                    where,
                )
            )
        elif env.region is not None and env.region not in REGIONS:
            line, col = _locate(doc.positions, where + ".region")
            problems.append(
                Problem(
                    str(path),
                    line,
                    col,
                    f"unknown region {env.region!r} (known: {', '.join(sorted(REGIONS))})",
                    where + ".region",
                )
            )
    if problems:
        raise ManifestError(problems)
    return config, path
