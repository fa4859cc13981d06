"""YAML manifests and reconciler.yaml into models, with every problem located as file:line:col.

Loading is safe (no arbitrary tags) and strict where PyYAML is lenient: duplicate keys are
errors (PyYAML keeps the last silently), alias expansion is bounded (no "billion laughs"), files
are size-limited and must be UTF-8, and unknown fields are errors (a typo is never ignored).
Problems are collected across ALL files and raised together as one ``ManifestError``, the way
Terraform collects diagnostics, so `validate` shows everything in one run.

This module reads files and nothing else (no network, no clock), except the per-file cache of
``load_checked``: a file whose bytes, variables and tool version were loaded and checked before
is not parsed again. A cache entry is a result we computed, never an input we trust: it must
carry the sha256 of its own payload and of the file's content, and its manifests go through
pydantic again; anything else is ignored and recomputed. Entries are written to a temporary
file and renamed into place, so concurrent runs see a whole entry or none.

Loading runs in steps (``load_checked_steps``): a generator that pauses after each file, so a
command can take the pages of a listing while its manifests load, on one thread (two threads
would fight over the GIL: measured, both got several times slower). ``finish`` runs the steps
without pausing.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import multiprocessing
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar, cast, get_args, get_origin

import orjson
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
# Nesting depth of one document: JSON Schema parameters nest a few levels per property, so real
# manifests stay far below; a hostile one thousands of levels deep is refused before it is built.
MAX_DEPTH = 64
PROJECT_FILE = "reconciler.yaml"

T = TypeVar("T")
# Work in steps: yields None after each unit of work (a file), or a Future the next step waits
# for (a worker process), and returns the result.
Steps = Generator["Future[Any] | None", None, T]


def finish(steps: Steps[T]) -> T:
    """Run steps to the end, without pausing between them."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(T, done.value)


_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
# `${name` with no closing brace: a typo that would otherwise pass as literal text.
_UNCLOSED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_}])")
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
    # Resources whose document names them but did not load (its problems are reported): a prompt
    # referencing one is not told again that it "is not defined".
    invalid: frozenset[ResourceKey] = frozenset()

    def by_key(self) -> dict[ResourceKey, LoadedManifest]:
        return {key_of(m.manifest): m for m in self.manifests}


# A position in the text: PyYAML's and libyaml's Mark classes differ; both have line and column.
_Mark = Any


class _Document:
    """One YAML document's data and where each field path starts, built from the parser's events.

    Building from events with an explicit stack (not from composed nodes, recursively) is what lets
    a hostile document nested thousands of levels deep be refused with its file:line instead of
    exhausting the C stack of libyaml's composer; it also skips building a node tree at all.
    """

    def __init__(self, file: str, variables: Mapping[str, str] | None, problems: list[Problem]) -> None:
        self.file, self.variables, self.problems = file, variables, problems
        self.positions: dict[str, tuple[int, int]] = {}

    def problem(self, mark: _Mark, path: str, message: str) -> None:
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        self.problems.append(Problem(self.file, line, col, message, path))

    def substitute(self, mark: _Mark, path: str, text: str, block: bool = False) -> str:
        """``text`` with ${name} replaced; a problem, on the line the ${...} is on, for a name
        no variable has and for a ${ left unclosed. ``block``: a | or > scalar, whose text starts
        on the line after ``mark``."""

        def at(offset: int) -> _Mark:
            lines = text.count("\n", 0, offset) + (1 if block else 0)
            return yaml.Mark("", 0, mark.line + lines, mark.column if not lines else 0, None, 0)

        def replace(match: re.Match[str]) -> str:
            escaped, name = match.group(1), match.group(2)
            if escaped:
                return "${" + name + "}"
            assert self.variables is not None
            if name not in self.variables:
                known = ", ".join(sorted(self.variables)) or "none defined"
                message = f"undefined variable ${{{name}}} (environment variables: {known})"
                self.problem(at(match.start()), path, message)
                return match.group(0)
            return self.variables[name]

        for unclosed in _UNCLOSED.finditer(text):
            name = unclosed.group(1)
            self.problem(at(unclosed.start()), path, f"${{{name} is not closed: write ${{{name}}}")
        return _VAR.sub(replace, text)


class _Refused(Exception):
    """The document is too deep or too large to build; ``message`` says which, at ``mark``."""

    def __init__(self, mark: _Mark, message: str) -> None:
        self.mark, self.message = mark, message


_SKIP = object()  # the "key" of a mapping entry that was reported and is being skipped
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class _Open:
    """A collection being built: its value, its path, and (for a mapping) the key awaiting a value."""

    value: dict[str, Any] | list[Any]
    path: str
    anchor: str | None
    nodes_before: int
    key: Any = None  # None: the next scalar is a key; _SKIP or a str: the next node is its value
    key_mark: _Mark = None


class _Builder:
    """Turns the parser's events for one document into plain data (the document's root value)."""

    def __init__(self, loader: yaml.SafeLoader, doc: _Document) -> None:
        self.loader, self.doc = loader, doc
        self.next_event: Callable[[], Any] = loader.get_event  # untyped in PyYAML's stubs
        self.resolve: Callable[..., str] = loader.resolve
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, nodes it stands for)
        self.nodes = 0
        resolvers: dict[str | None, Any] = loader.yaml_implicit_resolvers
        # A plain scalar whose first character starts no implicit type (bool, int, null, ...) is a
        # string: most scalars in a manifest, and resolve() would try nothing for them anyway.
        self.typed_starts = None if None in resolvers else frozenset(k for k in resolvers if k)

    def scalar(self, event: yaml.ScalarEvent) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            value: str = event.value
            if not event.implicit[0] or (
                value and self.typed_starts is not None and value[0] not in self.typed_starts
            ):
                return value  # quoted, or plain text that resolves to str
            tag = self.resolve(yaml.ScalarNode, value, event.implicit)
        if tag == _STR_TAG:
            return event.value
        start: _Mark = event.start_mark
        end: _Mark = event.end_mark
        node = yaml.ScalarNode(tag, event.value, start, end, event.style)
        return self.loader.construct_object(node)

    def count(self, mark: _Mark, nodes: int = 1) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise _Refused(
                mark, f"document expands to more than {MAX_NODES} nodes (aliases nested too deep?)"
            )

    def build(self) -> Any:
        """The root value; consumes events up to (not including) the DocumentEndEvent."""
        stack: list[_Open] = []
        while True:
            event = self.next_event()
            top = stack[-1] if stack else None
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                assert top is not None
                stack.pop()
                if top.anchor:
                    self.anchors[top.anchor] = (top.value, self.nodes - top.nodes_before)
                if not stack:
                    return top.value
                self._attach(stack[-1], top.value)
                continue
            if top is not None and isinstance(top.value, dict) and top.key is None:
                self._key(top, event)
                continue
            path = self._child_path(top)
            mark = event.start_mark
            self.count(mark)
            if top is None or top.key is not _SKIP:
                self.doc.positions.setdefault(path, (mark.line + 1, mark.column + 1))
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) >= MAX_DEPTH:
                    raise _Refused(mark, f"nested more than {MAX_DEPTH} levels deep")
                empty: dict[str, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
                stack.append(_Open(empty, path, event.anchor, self.nodes))
                continue
            if isinstance(event, yaml.AliasEvent):
                if event.anchor not in self.anchors:
                    raise _Refused(mark, f"alias *{event.anchor} names no anchor defined before it")
                value, nodes = self.anchors[event.anchor]
                self.count(mark, nodes)
            elif isinstance(event, yaml.ScalarEvent):
                value = self.scalar(event)
                if isinstance(value, str) and self.doc.variables is not None and "$" in value:
                    value = self.doc.substitute(mark, path, value, block=event.style in ("|", ">"))
                if event.anchor:
                    self.anchors[event.anchor] = (value, 1)
            else:  # pragma: no cover - the parser emits nothing else inside a document
                raise _Refused(mark, f"unexpected YAML event {type(event).__name__}")
            if top is None:
                return value
            self._attach(top, value)

    @staticmethod
    def _child_path(top: _Open | None) -> str:
        if top is None:
            return ""
        if isinstance(top.value, list):
            return f"{top.path}[{len(top.value)}]"
        if top.key is _SKIP:
            return f"{top.path}.<skipped>"
        return f"{top.path}.{top.key}" if top.path else str(top.key)

    @staticmethod
    def _attach(top: _Open, value: Any) -> None:
        if isinstance(top.value, list):
            top.value.append(value)
            return
        if top.key is not _SKIP:
            top.value[top.key] = value
        top.key = None

    def _key(self, top: _Open, event: yaml.Event) -> None:
        """Read a mapping key; a key that is reported makes its value be read and skipped."""
        assert isinstance(top.value, dict)
        mark = event.start_mark
        top.key_mark = mark
        if not isinstance(event, yaml.ScalarEvent):
            self.doc.problem(mark, top.path, "mapping keys must be strings")
            # A collection or alias as a key: read it (and drop it) as if it were the skipped value.
            top.key = _SKIP
            self._skip_node(event)
            top.key = _SKIP  # its value follows, and is skipped too
            return
        tag = event.tag
        if (tag is None or tag == "!") and event.implicit[0] and event.value == "<<":
            tag = _MERGE_TAG
        if tag == _MERGE_TAG:
            self.doc.problem(mark, top.path, "merge keys (<<) are not supported in manifests")
            top.key = _SKIP
            return
        key = self.scalar(event)
        if not isinstance(key, str):
            self.doc.problem(mark, top.path, f"mapping keys must be strings, got {key!r}")
            top.key = _SKIP
            return
        if key in top.value:
            child = f"{top.path}.{key}" if top.path else key
            first = self.doc.positions.get(child, (0, 0))[0]
            self.doc.problem(mark, child, f"duplicate key {key!r} (first defined on line {first})")
            top.key = _SKIP
            return
        top.key = key

    def _skip_node(self, event: yaml.Event) -> None:
        """Consume the rest of a node that started with ``event`` (iteratively, counting nodes)."""
        depth = 1 if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)) else 0
        self.count(event.start_mark)
        while depth:
            event = self.next_event()
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                self.count(event.start_mark)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            else:
                self.count(event.start_mark)


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
) -> Iterator[tuple[dict[str, Any], _Document, Source]]:
    """Each non-empty YAML document of a file as data, with its positions and where it starts;
    syntax errors, and documents too deep or too large, become problems."""
    loader = _BaseLoader(text)
    next_event: Callable[[], Any] = loader.get_event  # untyped in PyYAML's stubs
    peek_event: Callable[[], Any] = loader.peek_event
    try:
        next_event()  # StreamStartEvent
        while not loader.check_event(yaml.StreamEndEvent):
            next_event()  # DocumentStartEvent
            doc = _Document(file, variables, problems)
            first = peek_event()
            start = first.start_mark
            # An empty document (a leading or trailing ---) is no manifest and no mistake.
            empty = isinstance(first, yaml.ScalarEvent) and first.value == ""
            try:
                data = _Builder(loader, doc).build()
            except _Refused as refused:
                doc.problem(refused.mark, "", refused.message)
                while not loader.check_event(yaml.DocumentEndEvent):  # the rest of it, unbuilt
                    next_event()
                empty = True  # reported already
            next_event()  # DocumentEndEvent
            if empty:
                continue
            if not isinstance(data, dict):
                doc.problem(
                    start, "", "a manifest must be a mapping with apiVersion, kind, metadata and spec"
                )
                continue
            yield data, doc, Source(file, start.line + 1, start.column + 1)
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


def collect_manifests(
    paths: Sequence[Path], variables: Mapping[str, str] | None = None
) -> tuple[ManifestSet, list[Problem]]:
    """The manifests that loaded, and the problems of those that did not."""
    manifests, problems, _ = load_checked(paths, variables)
    return manifests, problems


# --- Loading file by file, with a cache ------------------------------------------------------

# What one manifest's own checks find (``rules.check_alone``): a function of that manifest alone.
LocalCheck = Callable[[LoadedManifest], list[Problem]]
CACHE_FORMAT = 1
# Cold loads of at least this many bytes are spread over processes (below it, starting them costs
# more than it saves).
PARALLEL_MIN_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class _FileOutcome:
    """What one file gives on its own: its problems and manifests in the order they were met
    (``events``: a Problem, or the index of a manifest in ``manifests``), and each manifest's own
    problems (``alone``). Duplicates and references are decided across files, later."""

    events: tuple[Problem | int, ...]
    manifests: tuple[LoadedManifest, ...]
    alone: tuple[tuple[Problem, ...], ...]
    invalid: tuple[tuple[str, str], ...] = ()  # (kind, name) of documents that did not load


class _LazyPositions(Mapping[str, tuple[int, int]]):
    """The positions of a manifest that came from the cache: found by parsing its file again the
    first time a problem needs one (rare: a cached file is one whose own checks ran already)."""

    def __init__(self, file: str, text: str, variables: Mapping[str, str], document: int) -> None:
        self._args = (file, text, variables, document)
        self._positions: Mapping[str, tuple[int, int]] | None = None

    def _load(self) -> Mapping[str, tuple[int, int]]:
        if self._positions is None:
            file, text, variables, document = self._args
            found: Mapping[str, tuple[int, int]] = {}
            for i, (_, doc, _) in enumerate(parse_documents(file, text, variables, [])):
                if i == document:
                    found = doc.positions
                    break
            self._positions = found
        return self._positions

    def __getitem__(self, key: str) -> tuple[int, int]:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _load_file(
    file: str, text: str, variables: Mapping[str, str], check_alone: LocalCheck | None
) -> tuple[_FileOutcome, list[tuple[dict[str, Any], int]]]:
    """Parse and check one file; also each manifest's data and document index (for the cache)."""
    problems: list[Problem] = []
    events: list[Problem | int] = []
    manifests: list[LoadedManifest] = []
    recorded: list[tuple[dict[str, Any], int]] = []

    def flush() -> None:
        events.extend(problems)
        problems.clear()

    invalid: list[tuple[str, str]] = []
    for index, (data, doc, source) in enumerate(parse_documents(file, text, variables, problems)):
        manifest = _manifest(data, doc, problems)
        flush()
        if manifest is None:
            named = _named(data)
            if named is not None:
                invalid.append(named)
            continue
        events.append(len(manifests))
        manifests.append(LoadedManifest(manifest, source, doc.positions))
        recorded.append((data, index))
    flush()
    alone = tuple(tuple(check_alone(m)) if check_alone else () for m in manifests)
    return _FileOutcome(tuple(events), tuple(manifests), alone, tuple(invalid)), recorded


def _named(data: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of a document that says which resource it is, though it did not load."""
    kind, metadata = data.get("kind"), data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if kind in {k.value for k in Kind} and isinstance(name, str) and name:
        return str(kind), name
    return None


def _payload(outcome: _FileOutcome, recorded: list[tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """A file's outcome as JSON data, without its file name (a renamed file hits the cache)."""

    def problem(p: Problem) -> list[Any]:
        return [p.line, p.col, p.message, p.field]

    return {
        "events": [e if isinstance(e, int) else problem(e) for e in outcome.events],
        "manifests": [
            {"data": data, "document": index, "at": [m.source.line, m.source.col]}
            for m, (data, index) in zip(outcome.manifests, recorded, strict=True)
        ],
        "alone": [[problem(p) for p in own] for own in outcome.alone],
        "invalid": [list(k) for k in outcome.invalid],
    }


def _from_payload(payload: Any, file: str, text: str, variables: Mapping[str, str]) -> _FileOutcome:
    """The outcome a payload describes; raises (KeyError, TypeError, ValueError, pydantic's
    ValidationError) on anything malformed: the caller then ignores the entry."""

    def problem(p: list[Any]) -> Problem:
        line, col, message, at = p
        if not (isinstance(line, int) and isinstance(col, int) and isinstance(message, str)):
            raise TypeError("malformed problem")
        return Problem(file, line, col, message, str(at))

    manifests = []
    for entry in payload["manifests"]:
        data, document, (line, col) = entry["data"], entry["document"], entry["at"]
        model = MANIFEST_MODELS[Kind(data["kind"])]
        if data.get("apiVersion") != API_VERSION or not isinstance(document, int):
            raise ValueError("malformed manifest")
        manifest: Manifest = model.model_validate(data)
        source = Source(file, int(line), int(col))
        manifests.append(LoadedManifest(manifest, source, _LazyPositions(file, text, variables, document)))
    events: list[Problem | int] = []
    for event in payload["events"]:
        if isinstance(event, int) and not isinstance(event, bool):
            if not 0 <= event < len(manifests):
                raise ValueError("malformed event")
            events.append(event)
        else:
            events.append(problem(event))
    alone = tuple(tuple(problem(p) for p in own) for own in payload["alone"])
    if len(alone) != len(manifests) or sorted(e for e in events if isinstance(e, int)) != list(
        range(len(manifests))
    ):
        raise ValueError("malformed outcome")
    invalid = tuple((str(Kind(kind).value), str(name)) for kind, name in payload.get("invalid", []))
    return _FileOutcome(tuple(events), tuple(manifests), alone, invalid)


def _tool_version() -> str:
    """What the cached results depend on besides the file: this package's code (its top-level
    modules, hashed, so an edited rule is never answered from an old cache) and the versions of
    the libraries that parse and check."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}\0{sys.version}".encode())
    for module in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(module.name.encode() + b"\0" + module.read_bytes())
    for dist in (
        "pydantic",
        "pydantic-core",
        "pyyaml",
        "jinja2",
        "jsonschema",
        "jsonschema-rs",
        "google-re2",
    ):
        try:
            digest.update(f"\0{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"\0{dist}=none".encode())
    return digest.hexdigest()


class _Cache:
    """``.reconciler/cache/<key>.json``: one entry per (file content, variables, tool version)."""

    def __init__(self, folder: Path, variables: Mapping[str, str], checked: bool) -> None:
        self.folder = folder
        self.salt = hashlib.sha256(
            orjson.dumps(
                [_tool_version(), sorted(variables.items()), checked], option=orjson.OPT_NON_STR_KEYS
            )
        ).hexdigest()

    def path(self, content_sha: str) -> Path:
        return self.folder / f"{hashlib.sha256((self.salt + content_sha).encode()).hexdigest()}.json"

    def read(self, content_sha: str) -> Any:
        """The payload stored for this content, or None (missing, corrupt, or not ours)."""
        try:
            raw = self.path(content_sha).read_bytes()
        except OSError:
            return None
        head, _, body = raw.partition(b"\n")
        if head != hashlib.sha256(body).hexdigest().encode():
            return None  # truncated or damaged: its own checksum does not match
        try:
            entry = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if (
            not isinstance(entry, dict)
            or entry.get("content") != content_sha
            or entry.get("salt") != self.salt
        ):
            return None
        return entry.get("payload")

    def write(self, content_sha: str, payload: dict[str, Any]) -> None:
        """Best effort: a cache that cannot be written only makes the next run slower."""
        try:
            body = orjson.dumps({"content": content_sha, "salt": self.salt, "payload": payload})
        except TypeError:  # an integer over 64 bits: orjson cannot write it, nor read it back exactly
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
                os.replace(tmp, self.path(content_sha))  # atomic: readers see all of it or none
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass


def _load_files(
    jobs: list[tuple[str, str]],
    variables: Mapping[str, str],
    check_alone: LocalCheck | None,
    cache_folder: Path | None,
    salt: str | None,
) -> Iterator[tuple[_FileOutcome, dict[str, Any]]]:
    """Parse and check files one by one (in this process or a worker); write their cache entries."""
    cache = None
    if cache_folder is not None and salt is not None:
        cache = _Cache.__new__(_Cache)
        cache.folder, cache.salt = cache_folder, salt
    for file, text in jobs:
        outcome, recorded = _load_file(file, text, variables, check_alone)
        payload = _payload(outcome, recorded)
        if cache is not None:
            cache.write(hashlib.sha256(text.encode()).hexdigest(), payload)
        yield outcome, payload


def _worker_load(
    jobs: list[tuple[str, str]],
    variables: Mapping[str, str],
    check_alone: LocalCheck | None,
    cache_folder: Path | None,
    salt: str | None,
) -> list[bytes | dict[str, Any]]:
    """A worker's share, sent back as JSON (pickling pydantic models is slower to send and load),
    one document per file: the parent decodes them one at a time, so the decoded share is never
    all in memory at once (at 20k resources that was ~40 MB on top of the peak)."""
    return [_sendable(p) for _, p in _load_files(jobs, variables, check_alone, cache_folder, salt)]


def _sendable(payload: dict[str, Any]) -> bytes | dict[str, Any]:
    """JSON when orjson can write it exactly; else the payload itself, pickled (an integer over
    64 bits, which orjson refuses to write and would read back as a float)."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return payload


def _load_all(
    jobs: list[tuple[str, str]],
    variables: Mapping[str, str],
    check_alone: LocalCheck | None,
    cache: _Cache | None,
) -> Steps[list[_FileOutcome]]:
    """Outcomes of files that were not in the cache, in order: spread over processes when there
    is enough to do and more than one core (fork only: a spawned worker would import it all
    again; and only while this process has no other thread, which a forked child could find
    holding a lock it needs)."""
    folder, salt = (cache.folder, cache.salt) if cache else (None, None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    size = sum(len(text) for _, text in jobs)
    outcomes: list[_FileOutcome] = []
    if (
        cores < 2
        or size < PARALLEL_MIN_BYTES
        or "fork" not in multiprocessing.get_all_start_methods()
        or threading.active_count() > 1
    ):
        for outcome, _ in _load_files(jobs, variables, check_alone, folder, salt):
            outcomes.append(outcome)
            yield None
        return outcomes
    # Split by size into one share per core; this process takes the first share itself.
    shares: list[list[tuple[str, str]]] = [[] for _ in range(cores)]
    bound, done, index = size / cores, 0, 0
    for file, text in jobs:
        shares[min(index, cores - 1)].append((file, text))
        done += len(text)
        if done >= bound * (index + 1):
            index += 1
    with ProcessPoolExecutor(cores - 1, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [
            pool.submit(_worker_load, share, variables, check_alone, folder, salt) for share in shares[1:]
        ]
        for outcome, _ in _load_files(shares[0], variables, check_alone, folder, salt):
            outcomes.append(outcome)
            yield None
        for share, future in zip(shares[1:], futures, strict=True):
            yield future  # whoever drives these steps may do other work until the worker is done
            for (file, text), payload in zip(share, future.result(), strict=True):
                data = orjson.loads(payload) if isinstance(payload, bytes) else payload
                outcomes.append(_from_payload(data, file, text, variables))
                yield None
    return outcomes


def load_checked(
    paths: Sequence[Path],
    variables: Mapping[str, str] | None = None,
    check_alone: LocalCheck | None = None,
    cache_dir: Path | None = None,
) -> tuple[ManifestSet, list[Problem], list[list[Problem]]]:
    """``load_checked_steps`` run to the end."""
    return finish(load_checked_steps(paths, variables, check_alone, cache_dir))


def load_checked_steps(
    paths: Sequence[Path],
    variables: Mapping[str, str] | None = None,
    check_alone: LocalCheck | None = None,
    cache_dir: Path | None = None,
) -> Steps[tuple[ManifestSet, list[Problem], list[list[Problem]]]]:
    """The manifests that loaded, the problems of those that did not (with file:line:col), and
    for each loaded manifest what ``check_alone`` found in it.

    With ``cache_dir``, each file's outcome is remembered under the sha256 of its bytes, the
    variables and the tool version; a later run with the same content reads it back instead of
    parsing. Duplicates across files are decided here on every run, after the cache.
    """
    variables = dict(variables or {})
    problems: list[Problem] = []
    digest = hashlib.sha256(json.dumps(sorted(variables.items())).encode())
    cache = _Cache(cache_dir, variables, check_alone is not None) if cache_dir is not None else None
    texts: list[tuple[str, str]] = []
    unreadable: dict[int, list[Problem]] = {}  # problems reading a file, reported in file order
    for path in _manifest_files(paths, problems):
        found: list[Problem] = []
        text = _read(path, found)
        if text is None:
            unreadable.setdefault(len(texts), []).extend(found)
            continue
        digest.update(f"\0{path.as_posix()}\0".encode() + text.encode())
        texts.append((str(path), text))
        yield None
    outcomes: dict[int, _FileOutcome] = {}
    missing: list[int] = []
    for i, (file, text) in enumerate(texts):
        payload = cache.read(hashlib.sha256(text.encode()).hexdigest()) if cache else None
        if payload is not None:
            try:
                outcomes[i] = _from_payload(payload, file, text, variables)
                yield None
                continue
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, ValidationError):
                pass  # not what we wrote: recompute, and overwrite it
        missing.append(i)
    if missing:
        computed = yield from _load_all([texts[i] for i in missing], variables, check_alone, cache)
        outcomes.update(zip(missing, computed, strict=True))
    loaded: list[LoadedManifest] = []
    alone: list[list[Problem]] = []
    seen: dict[ResourceKey, Source] = {}
    for i in range(len(texts) + 1):
        problems.extend(unreadable.get(i, ()))
        if i == len(texts):
            break
        outcome = outcomes[i]
        for event in outcome.events:
            if isinstance(event, Problem):
                problems.append(event)
                continue
            item = outcome.manifests[event]
            key, source = key_of(item.manifest), item.source
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
            loaded.append(item)
            alone.append(list(outcome.alone[event]))
    invalid = frozenset(ResourceKey(Kind(k), n) for o in outcomes.values() for k, n in o.invalid)
    return ManifestSet(tuple(loaded), digest.hexdigest(), invalid - set(seen)), problems, alone


def _manifest(data: dict[str, Any], doc: _Document, problems: list[Problem]) -> Manifest | None:
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
    try:
        return model.model_validate(data)
    except ValidationError:
        problems.extend(validation_problems(model, data, doc))
        return None


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


def find_project_file(start: Path) -> Path | None:
    """The nearest reconciler.yaml in ``start`` or above it (relative when it is in ``start``)."""
    if (start / PROJECT_FILE).is_file():
        return Path(PROJECT_FILE)
    for folder in start.parents:
        if (folder / PROJECT_FILE).is_file():
            return folder / PROJECT_FILE
    return None


def load_project(path: Path | None = None) -> tuple[ProjectConfig, Path | None]:
    """reconciler.yaml: ``path``, or the nearest one in this folder or a folder above it (as git
    finds its repository, so commands work from any folder of the project); defaults otherwise.
    Problems name the file as found (relative when it is in this folder)."""
    if path is None:
        found = find_project_file(Path.cwd())
        if found is None:
            return ProjectConfig(), None
        path = found
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
