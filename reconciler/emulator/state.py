"""The emulator's shared vocabulary: constants, the Genesys error answer, its mutable state,
request-body reading and the endpoint table's row type.

Every concern (auth, faults, resources, admin) builds on this module; it imports none of them.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.store import Store

MAX_BODY = 1024 * 1024
FUNCTIONS, PROMPTS, POLICIES = "function-definitions", "prompts", "context-policies"
BASE = "/api/v2/ai/llm"
# Every API answer (errors included) says so: configuration must never be served from a cache.
NO_STORE = {"Cache-Control": "no-store"}
CODES = {
    400: "bad.request",
    401: "authentication.required",
    403: "missing.permissions",
    404: "not.found",
    405: "method.not.allowed",
    409: "conflict",
    412: "precondition.failed",
    413: "request.entity.too.large",
    415: "unsupported.media.type",
    428: "precondition.required",
    429: "too.many.requests",
    500: "internal.server.error",
    502: "bad.gateway",
    503: "service.unavailable",
    504: "request.timeout",
}


class ApiProblem(Exception):
    """An error answer in the Genesys error body shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status, self.message = status, message
        self.code = code or CODES.get(status, "error")
        self.field, self.headers = field, headers or {}
        super().__init__(message)


def error_response(problem: ApiProblem) -> JSONResponse:
    context = str(uuid.uuid4())
    details = [{"errorCode": problem.code, "fieldName": problem.field}] if problem.field else []
    body = {
        "message": problem.message,
        "code": problem.code,
        "status": problem.status,
        "messageWithParams": problem.message,
        "messageParams": {},
        "contextId": context,
        "details": details,
        "errors": [],
    }
    return JSONResponse(
        body,
        status_code=problem.status,
        headers={"ININ-Correlation-Id": context, **NO_STORE, **problem.headers},
    )


@dataclass
class Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    window_start: float = 0.0
    count: int = 0


@dataclass
class State:
    """Everything mutable about a running emulator besides its store."""

    config: EmulatorConfig
    store: Store
    rng: random.Random
    models: dict[str, dict[str, Any]]
    flows: dict[str, dict[str, Any]]
    conversations: dict[str, dict[str, Any]]
    metrics: dict[str, Any]
    tokens: dict[str, Token] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    armed: set[tuple[str, str]] = field(default_factory=set)
    edited: list[dict[str, str]] = field(default_factory=list)
    # Fault decisions are drawn per request, not from one shared stream: see ``draw``.
    fault_seed: str = "0"
    attempts: Counter[str] = field(default_factory=Counter)
    # How far the emulator's clock is from wall time: the config's start, plus every
    # ``POST /__emulator/clock`` since (see ``now``).
    clock_offset_s: float = 0.0

    def now(self) -> float:
        """The emulator's one clock, in epoch seconds: wall time plus ``clock_offset_s``.

        Everything the emulator times reads it: token issue, expiry and eviction, rate-limit
        windows, the synthetic traffic's "now" and behaviour changes, and the resources' date
        stamps (a prompt's traffic starts at its ``dateCreated``). Tests move it forward with
        ``POST /__emulator/clock`` instead of sleeping.
        """
        return time.time() + self.clock_offset_s

    def now_iso(self) -> str:
        return iso(self.now())

    def request_identity(self, request: Request) -> str:
        """Count this request among those with its method and target; name it by both and the count.

        Called once per request (by the app's wrapper), which stores the name on ``request.state``.
        """
        target = f"{request.method} {request.url.path}?{request.url.query}"
        self.attempts[target] += 1
        return f"{target}#{self.attempts[target]}"

    def draw(self, request: Request, purpose: str) -> float:
        """A number in [0, 1) for one fault decision (``purpose``: "fail", "drop", "jitter", ...).

        It depends only on the seed, the request's method and target, how many such requests came
        before it, and the purpose: never on how concurrent requests interleave. So a seeded run
        meets the same faults on every replay (the third PUT of a resource is dropped in every
        run), and a failure seen once can be reproduced.
        """
        identity = getattr(request.state, "identity", None) or self.request_identity(request)
        digest = hashlib.sha256(f"{self.fault_seed}|{identity}|{purpose}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


def iso(epoch: float) -> str:
    """Epoch seconds as the API writes instants: UTC, milliseconds, a Z."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_etag() -> str:
    return f'"{uuid.uuid4().hex}"'


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused with 413 before it is buffered when it is (or grows) too large.

    A declared Content-Length over the limit is refused without reading a byte; without one
    (chunked), the body is read in pieces and reading stops as soon as it passes the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise ApiProblem(400, "Content-Length must be a non-negative integer")
        if int(declared) > limit:
            raise ApiProblem(413, f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiProblem(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        # NaN and Infinity are not JSON (RFC 8259), and the service's parser refuses them.
        body = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise ApiProblem(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiProblem(400, "request body must be a JSON object")
    return body


async def json_body(request: Request, limit: int = MAX_BODY) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await read_body(request, limit)
    if content_type != "application/json":
        raise ApiProblem(
            415, f"content type {content_type or 'none'} is not supported; send application/json"
        )
    return parse_json_object(raw)


def _entity_tags(header: str) -> list[str]:
    """The entity-tags of an If-Match / If-None-Match list (RFC 9110 8.8.3), '*' kept as is."""
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def strong_match(header: str, current: str | None) -> bool:
    """If-Match: does the list name the current representation (strong comparison)?"""
    if current is None:
        return False
    # A weak tag never matches strongly; our own etags are always strong.
    return any(tag == "*" or (tag == current and not tag.startswith("W/")) for tag in _entity_tags(header))


def weak_match(header: str, current: str | None) -> bool:
    """If-None-Match: does the list name the current representation (weak comparison)?"""
    if current is None:
        return False
    opaque = current.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == opaque for tag in _entity_tags(header))


Handler = Callable[[State, Request, Token], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """One API route: its template (for counters and OpenAPI), scope, and handler."""

    method: str
    template: str
    scope: str
    handler: Handler
    writes: bool = False
