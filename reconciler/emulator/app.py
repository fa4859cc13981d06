"""The Genesys Cloud LLM Gateway emulator: a real ASGI app that behaves like the service.

It implements API.md strictly (OAuth client credentials with scopes, ETag/If-Match with 412 and
428, the Genesys error body with ININ-Correlation-Id on every error, page-number listings,
per-token rate limits with Retry-After, server-side validation and defaults), persists in
SQLite, and injects faults on demand (latency, error statuses, lost responses, slow bodies, and
a "concurrent writer" that edits a resource just before a client's write reaches it).

It shares no code with the client, planner or apply: it is the other side of the wire.
Built on Starlette rather than FastAPI so every status code, error body and the OpenAPI document
are exactly ours, with no framework-generated 422s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from reconciler.emulator import validation
from reconciler.emulator.config import EmulatorConfig, Faults
from reconciler.emulator.openapi import openapi_document
from reconciler.emulator.store import Store

MAX_BODY = 1024 * 1024
FUNCTIONS, PROMPTS, POLICIES = "function-definitions", "prompts", "context-policies"
BASE = "/api/v2/ai/llm"
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
READ_SCOPE = {FUNCTIONS: "ai:llm:function-definition:read", PROMPTS: "ai:llm:manage", POLICIES: "ai:llm:read"}
WRITE_SCOPE = {
    FUNCTIONS: "ai:llm:function-definition:write",
    PROMPTS: "ai:llm:manage",
    POLICIES: "ai:llm:write",
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


class DropConnection(Exception):
    """Raised after the response has started, so the client sees the connection cut."""


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
        body, status_code=problem.status, headers={"ININ-Correlation-Id": context, **problem.headers}
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


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _etag() -> str:
    return f'"{uuid.uuid4().hex}"'


def _load_fixture(state_dir: Any, name: str, default: Any) -> Any:
    path = state_dir / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


# --- request plumbing ---------------------------------------------------------------------------


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiProblem(413, f"request body is {len(raw)} bytes; the limit is {MAX_BODY}")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiProblem(
            415, f"content type {content_type or 'none'} is not supported; send application/json"
        )
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiProblem(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiProblem(400, "request body must be a JSON object")
    return body


def _authorize(state: State, request: Request, scope: str) -> Token:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise ApiProblem(401, "Authentication required: send a bearer token", "authentication.required")
    token = state.tokens.get(header[7:].strip())
    if token is None or token.expires_at <= time.time():
        raise ApiProblem(401, "The bearer token is invalid or has expired", "bad.credentials")
    if scope not in token.scopes:
        raise ApiProblem(403, f"Missing the permission (scope) {scope}", "missing.permissions")
    return token


def _rate_headers(state: State, token: Token) -> dict[str, str]:
    now = time.time()
    if now - token.window_start >= 60:
        token.window_start, token.count = now, 0
    token.count += 1
    allowed = state.config.rate_limit_per_minute
    reset = max(1, math.ceil(60 - (now - token.window_start)))
    headers = {
        "inin-ratelimit-count": str(token.count),
        "inin-ratelimit-allowed": str(allowed),
        "inin-ratelimit-reset": str(reset),
    }
    if token.count > allowed:
        raise ApiProblem(
            429,
            f"Rate limit exceeded the maximum. Retry the request in [{reset}] seconds",
            headers={**headers, "Retry-After": str(reset)},
        )
    return headers


Handler = Callable[[State, Request, Token], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """One API route: its template (for counters and OpenAPI), scope, and handler."""

    method: str
    template: str
    scope: str
    handler: Handler
    writes: bool = False


def _wrap(state: State, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        state.requests[f"{endpoint.method} {endpoint.template}"] += 1
        faults = state.config.faults
        headers: dict[str, str] = {}
        try:
            if faults.latency_ms or faults.jitter_ms:
                await asyncio.sleep((faults.latency_ms + state.rng.uniform(0, faults.jitter_ms)) / 1000)
            token = _authorize(state, request, endpoint.scope)
            headers = _rate_headers(state, token)
            _maybe_fail(state, faults)
            response = await endpoint.handler(state, request, token)
        except ApiProblem as problem:
            problem.headers = {**headers, **problem.headers}
            response = error_response(problem)
        response.headers.update(headers)
        state.statuses[response.status_code] += 1
        if faults.drop and state.rng.random() < faults.drop:
            return _dropped(response)
        if faults.slow_body_ms and response.status_code != 304:
            return _slow(response, faults.slow_body_ms)
        return response

    return run


def _maybe_fail(state: State, faults: Faults) -> None:
    draw = state.rng.random()
    for status, probability in sorted(faults.fail.items()):
        if draw < probability:
            wait = faults.retry_after_s
            headers = {"Retry-After": str(wait)} if status == 429 else {}
            message = (
                f"Rate limit exceeded the maximum. Retry the request in [{wait}] seconds"
                if status == 429
                else f"injected fault {status}"
            )
            raise ApiProblem(status, message, headers=headers)
        draw -= probability


def _dropped(response: Response) -> Response:
    """Start the response, then cut the connection: the client never gets a complete answer."""
    body = bytes(response.body)

    async def cut() -> Any:
        yield body[: len(body) // 2]
        raise DropConnection("injected: connection dropped after processing")

    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    headers["content-length"] = str(len(body))
    return StreamingResponse(cut(), status_code=response.status_code, headers=headers)


def _slow(response: Response, total_ms: float) -> Response:
    body = bytes(response.body)
    pieces = 5

    async def trickle() -> Any:
        step = max(1, math.ceil(len(body) / pieces))
        for start in range(0, len(body), step):
            await asyncio.sleep(total_ms / 1000 / pieces)
            yield body[start : start + step]

    return StreamingResponse(trickle(), status_code=response.status_code, headers=dict(response.headers))


# --- listings ------------------------------------------------------------------------------------


def _page_params(request: Request) -> tuple[int, int]:
    try:
        size = int(request.query_params.get("pageSize", "25"))
        number = int(request.query_params.get("pageNumber", "1"))
    except ValueError:
        raise ApiProblem(400, "pageSize and pageNumber must be integers", "invalid.value") from None
    if not 1 <= size <= 100:
        raise ApiProblem(400, "pageSize must be between 1 and 100", "invalid.value", "pageSize")
    if number < 1:
        raise ApiProblem(400, "pageNumber starts at 1", "invalid.value", "pageNumber")
    return size, number


def _envelope(
    request: Request,
    entities: list[dict[str, Any]],
    total: int,
    size: int,
    number: int,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    count = math.ceil(total / size) if total else 0
    path = request.url.path

    def uri(n: int) -> str:
        return f"{path}?{urlencode({**(extra or {}), 'pageSize': size, 'pageNumber': n})}"

    body: dict[str, Any] = {
        "entities": entities,
        "pageSize": size,
        "pageNumber": number,
        "total": total,
        "pageCount": count,
        "selfUri": uri(number),
        "firstUri": uri(1),
        "lastUri": uri(max(count, 1)),
    }
    if number < count:
        body["nextUri"] = uri(number + 1)
    if number > 1:
        body["previousUri"] = uri(number - 1)
    return body


def _listing(kind: str) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        size, number = _page_params(request)
        name = request.query_params.get("name") if kind == PROMPTS else None
        with state.store.lock:
            total = state.store.count(kind, name)
            offset = (number - 1) * size
            # A page past the end is empty (schemathesis found that a huge pageNumber overflowed
            # SQLite's OFFSET into a 500).
            entities = state.store.page(kind, size, offset, name) if offset < total else []
        return JSONResponse(
            _envelope(request, entities, total, size, number, {"name": name} if name else None)
        )

    return handler


def _static_listing(items: Callable[[State], list[dict[str, Any]]]) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        size, number = _page_params(request)
        everything = items(state)
        page = everything[(number - 1) * size : number * size]
        return JSONResponse(_envelope(request, page, len(everything), size, number))

    return handler


# --- configuration resources -------------------------------------------------------------------


def _with_etag(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers={"ETag": body["etag"]})


def _item_get(kind: str) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        resource_id = request.path_params["id"]
        body = state.store.get(kind, resource_id)
        if body is None:
            raise ApiProblem(404, f"{kind} {resource_id} not found")
        if request.headers.get("if-none-match") == body["etag"]:
            return Response(status_code=304, headers={"ETag": body["etag"]})
        return _with_etag(body)

    return handler


def _check_preconditions(state: State, request: Request, current: dict[str, Any] | None) -> None:
    if_match, if_none_match = request.headers.get("if-match"), request.headers.get("if-none-match")
    if if_none_match == "*" and current is not None:
        raise ApiProblem(412, "the resource already exists (If-None-Match: *)")
    if if_match is not None and (current is None or if_match not in (current["etag"], "*")):
        raise ApiProblem(412, "the resource has changed since the given ETag (If-Match)")
    if current is not None and if_match is None and not state.config.lax:
        raise ApiProblem(428, "updating an existing resource requires If-Match with its ETag")


def _concurrent_edit(state: State, kind: str, resource_id: str) -> None:
    """The concurrent writer: an out-of-band edit that lands just before this client's write.

    It commits in its own transaction, as another client's write would: the write that follows
    may fail, but the edit stays.
    """
    armed = (kind, resource_id) in state.armed
    chance = state.config.faults.concurrent_writer
    if not armed and not (chance and state.rng.random() < chance):
        return
    with state.store.transaction():
        current = state.store.get(kind, resource_id)
        if current is not None:
            _edit_out_of_band(state, kind, resource_id, current)


def _edit_out_of_band(state: State, kind: str, resource_id: str, current: dict[str, Any]) -> None:
    state.armed.discard((kind, resource_id))
    edited = dict(current)
    edited["labels"] = {**(current.get("labels") or {}), "edited-out-of-band": "true"}
    if kind == FUNCTIONS:
        edited["description"] = f"{current.get('description', '')} (edited out of band)"
        edited["version"] = int(current.get("version", 1)) + 1
    elif kind == PROMPTS:
        edited["template"] = f"{current.get('template', '')}\n(edited out of band)"
        edited["revision"] = int(current.get("revision", 1)) + 1
    edited.update(etag=_etag(), dateModified=_now_iso(), modifiedBy="someone-else")
    state.store.put(kind, resource_id, str(edited.get("name", resource_id)), edited)
    if kind == PROMPTS:
        state.store.add_version(resource_id, int(current.get("revision", 1)), current)
    state.edited.append({"kind": kind, "id": resource_id})


def _stamp(
    body: dict[str, Any], kind: str, resource_id: str, token: Token, previous: dict[str, Any] | None
) -> None:
    body.update(
        etag=_etag(),
        selfUri=f"{BASE}/{kind}/{resource_id}",
        dateModified=_now_iso(),
        modifiedBy=token.client_id,
        dateCreated=previous["dateCreated"] if previous else _now_iso(),
    )


def _put(kind: str) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        resource_id = request.path_params["id"]
        incoming = await _json_body(request)
        _concurrent_edit(state, kind, resource_id)
        with state.store.transaction():
            current = state.store.get(kind, resource_id)
            _check_preconditions(state, request, current)
            try:
                if kind == FUNCTIONS:
                    body = validation.function_definition(resource_id, incoming)
                    body["version"] = int(current["version"]) + 1 if current else 1
                elif kind == POLICIES:
                    body = validation.context_policy(resource_id, incoming, state.models)
                else:
                    body = validation.prompt(incoming, state.models)
                    if current is None:
                        raise ApiProblem(404, f"prompt {resource_id} not found; create prompts with POST")
                    other = state.store.find_by_name(PROMPTS, body["name"])
                    if other is not None and other["id"] != resource_id:
                        raise ApiProblem(409, f"a prompt named {body['name']!r} already exists", field="name")
                    body["id"] = resource_id
                    body["revision"] = int(current["revision"]) + 1
                    state.store.add_version(resource_id, int(current["revision"]), current)
            except validation.Invalid as exc:
                raise ApiProblem(400, exc.message, "invalid.value", exc.field) from None
            _stamp(body, kind, resource_id, token, current)
            state.store.put(
                kind,
                resource_id,
                str(body.get("name", resource_id)) if kind == PROMPTS else resource_id,
                body,
            )
        return JSONResponse(body, status_code=200 if current else 201, headers={"ETag": body["etag"]})

    return handler


def _delete(kind: str) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        resource_id = request.path_params["id"]
        _concurrent_edit(state, kind, resource_id)
        with state.store.transaction():
            current = state.store.get(kind, resource_id)
            if current is None:
                raise ApiProblem(404, f"{kind} {resource_id} not found")
            if_match = request.headers.get("if-match")
            if if_match is not None and if_match not in (current["etag"], "*"):
                raise ApiProblem(412, "the resource has changed since the given ETag (If-Match)")
            if if_match is None and not state.config.lax:
                raise ApiProblem(428, "deleting a resource requires If-Match with its ETag")
            state.store.delete(kind, resource_id)
        return Response(status_code=204)

    return handler


async def _create_prompt(state: State, request: Request, token: Token) -> Response:
    incoming = await _json_body(request)
    try:
        body = validation.prompt(incoming, state.models)
    except validation.Invalid as exc:
        raise ApiProblem(400, exc.message, "invalid.value", exc.field) from None
    with state.store.transaction():
        if state.store.find_by_name(PROMPTS, body["name"]) is not None:
            raise ApiProblem(409, f"a prompt named {body['name']!r} already exists", field="name")
        resource_id = str(uuid.UUID(int=state.rng.getrandbits(128), version=4))
        body["id"], body["revision"] = resource_id, 1
        _stamp(body, PROMPTS, resource_id, token, None)
        state.store.put(PROMPTS, resource_id, body["name"], body)
    return JSONResponse(body, status_code=201, headers={"ETag": body["etag"]})


async def _prompt_versions(state: State, request: Request, token: Token) -> Response:
    resource_id = request.path_params["id"]
    if state.store.get(PROMPTS, resource_id) is None:
        raise ApiProblem(404, f"prompt {resource_id} not found")
    size, number = _page_params(request)
    history = state.store.versions(resource_id)
    return JSONResponse(
        _envelope(request, history[(number - 1) * size : number * size], len(history), size, number)
    )


# --- read-only context ----------------------------------------------------------------------------


async def _capacity(state: State, request: Request, token: Token) -> Response:
    model = state.models.get(request.path_params["modelId"])
    if model is None:
        raise ApiProblem(404, f"model {request.path_params['modelId']} not found")
    return JSONResponse(
        {
            k: model[k]
            for k in (
                "model_id",
                "max_tokens",
                "max_context_windows",
                "supported_formats",
                "compaction_enabled",
            )
        }
    )


def _lookup(collection: Callable[[State], dict[str, dict[str, Any]]], param: str, noun: str) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        found = collection(state).get(request.path_params[param])
        if found is None:
            raise ApiProblem(404, f"{noun} {request.path_params[param]} not found")
        return JSONResponse(found)

    return handler


async def _analytics(state: State, request: Request, token: Token) -> Response:
    if "ai:metrics:read" not in token.scopes:
        raise ApiProblem(403, "Missing the permission (scope) ai:metrics:read", "missing.permissions")
    query = await _json_body(request)
    if query.get("view") != "ai_llm_gateway":
        raise ApiProblem(400, "view must be ai_llm_gateway", "invalid.value", "view")
    ids = [
        v
        for f in query.get("filters", [])
        if isinstance(f, dict) and f.get("type") == "aiPromptId"
        for v in f.get("values", [])
    ]
    metrics = query.get("metrics") or ["aiLatency", "aiTokensUsed", "aiSuccessRate"]
    default = state.metrics.get("default", {})
    entities = [{"aiPromptId": i, **{m: state.metrics.get(i, default).get(m) for m in metrics}} for i in ids]
    return JSONResponse({"entities": entities})


# --- OAuth and admin -------------------------------------------------------------------------------


async def _token(state: State, request: Request) -> Response:
    header = request.headers.get("authorization", "")
    try:
        client_id, _, secret = (
            base64.b64decode(header[6:]).decode().partition(":")
            if header.lower().startswith("basic ")
            else ("", "", "")
        )
    except (ValueError, UnicodeDecodeError):
        client_id, secret = "", ""
    # A urlencoded form is a few lines with the stdlib; no need for python-multipart.
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("latin-1")).items()}
    known = state.config.clients.get(client_id)
    if known is None or not secrets.compare_digest(known[0], secret):
        return JSONResponse(
            {"error": "invalid_client", "description": "client authentication failed"},
            status_code=401,
            headers={"ININ-Correlation-Id": str(uuid.uuid4())},
        )
    if form.get("grant_type") != "client_credentials":
        return JSONResponse(
            {"error": "unsupported_grant_type", "description": "use client_credentials"},
            status_code=400,
            headers={"ININ-Correlation-Id": str(uuid.uuid4())},
        )
    requested = str(form.get("scope") or "").split()
    scopes = known[1] & frozenset(requested) if requested else known[1]
    access = secrets.token_urlsafe(32)
    state.tokens[access] = Token(client_id, scopes, time.time() + state.config.token_lifetime_s)
    return JSONResponse(
        {"access_token": access, "token_type": "bearer", "expires_in": state.config.token_lifetime_s}
    )


def _admin_routes(state: State) -> list[Route]:
    async def reset(request: Request) -> Response:
        state.store.reset()
        state.requests.clear()
        state.statuses.clear()
        state.armed.clear()
        state.edited.clear()
        return JSONResponse({"reset": True})

    async def stats(request: Request) -> Response:
        return JSONResponse(
            {
                "requests": dict(state.requests),
                "statuses": {str(k): v for k, v in state.statuses.items()},
                "total": sum(state.requests.values()),
                "throttled": state.statuses.get(429, 0),
                "edited_out_of_band": state.edited,
            }
        )

    async def faults(request: Request) -> Response:
        body = await request.json()
        state.config.faults = Faults(
            latency_ms=float(body.get("latency_ms", 0)),
            jitter_ms=float(body.get("jitter_ms", 0)),
            fail={int(k): float(v) for k, v in (body.get("fail") or {}).items()},
            drop=float(body.get("drop", 0)),
            slow_body_ms=float(body.get("slow_body_ms", 0)),
            concurrent_writer=float(body.get("concurrent_writer", 0)),
            retry_after_s=int(body.get("retry_after_s", 1)),
        )
        if "seed" in body:
            state.rng.seed(body["seed"])
        if "rate_limit_per_minute" in body:
            state.config.rate_limit_per_minute = int(body["rate_limit_per_minute"])
        return JSONResponse(asdict(state.config.faults))

    async def arm(request: Request) -> Response:
        body = await request.json()
        for target in body.get("resources", []):
            state.armed.add((str(target["kind"]), str(target["id"])))
        return JSONResponse({"armed": sorted(f"{k}/{i}" for k, i in state.armed)})

    async def bulk(request: Request) -> Response:
        body = await request.json()
        system = Token("bulk-loader", frozenset(), math.inf)
        created: dict[str, int] = {}
        try:
            with state.store.transaction():
                for item in body.get(FUNCTIONS, []):
                    stored = validation.function_definition(str(item.get("id")), item)
                    stored["version"] = 1
                    _stamp(stored, FUNCTIONS, stored["id"], system, None)
                    state.store.put(FUNCTIONS, stored["id"], stored["id"], stored)
                for item in body.get(POLICIES, []):
                    stored = validation.context_policy(str(item.get("id")), item, state.models)
                    _stamp(stored, POLICIES, stored["id"], system, None)
                    state.store.put(POLICIES, stored["id"], stored["id"], stored)
                for item in body.get(PROMPTS, []):
                    stored = validation.prompt(item, state.models)
                    stored["id"], stored["revision"] = (
                        str(uuid.UUID(int=state.rng.getrandbits(128), version=4)),
                        1,
                    )
                    _stamp(stored, PROMPTS, stored["id"], system, None)
                    state.store.put(PROMPTS, stored["id"], stored["name"], stored)
                created = {k: len(body.get(k, [])) for k in (FUNCTIONS, POLICIES, PROMPTS)}
        except validation.Invalid as exc:
            return error_response(ApiProblem(400, exc.message, "invalid.value", exc.field))
        return JSONResponse({"created": created})

    prefix = "/__emulator"
    return [
        Route(f"{prefix}/reset", reset, methods=["POST"]),
        Route(f"{prefix}/stats", stats, methods=["GET"]),
        Route(f"{prefix}/faults", faults, methods=["PUT"]),
        Route(f"{prefix}/concurrent-writer", arm, methods=["POST"]),
        Route(f"{prefix}/bulk", bulk, methods=["POST"]),
    ]


def endpoints() -> list[Endpoint]:
    """Every API route, in one table: routing, counters and the OpenAPI document all read it."""
    out: list[Endpoint] = []
    for kind in (FUNCTIONS, PROMPTS, POLICIES):
        collection, item = f"{BASE}/{kind}", f"{BASE}/{kind}/{{id}}"
        out += [
            Endpoint("GET", collection, READ_SCOPE[kind], _listing(kind)),
            Endpoint("GET", item, READ_SCOPE[kind], _item_get(kind)),
            Endpoint("PUT", item, WRITE_SCOPE[kind], _put(kind), writes=True),
            Endpoint("DELETE", item, WRITE_SCOPE[kind], _delete(kind), writes=True),
        ]
    out += [
        Endpoint("POST", f"{BASE}/prompts", "ai:llm:manage", _create_prompt, writes=True),
        Endpoint("GET", f"{BASE}/prompts/{{id}}/versions", "ai:llm:manage", _prompt_versions),
        Endpoint("GET", f"{BASE}/models", "ai:llm:read", _static_listing(lambda s: list(s.models.values()))),
        Endpoint("GET", f"{BASE}/models/{{modelId}}/capacity", "ai:llm:read", _capacity),
        Endpoint("GET", "/api/v2/flows/{flowId}", "flow:read", _lookup(lambda s: s.flows, "flowId", "flow")),
        Endpoint(
            "GET",
            "/api/v2/conversations/{conversationId}",
            "conversation:view",
            _lookup(lambda s: s.conversations, "conversationId", "conversation"),
        ),
        Endpoint(
            "POST",
            "/api/v2/analytics/conversations/details/query",
            "analytics:conversations:view",
            _analytics,
        ),
    ]
    return out


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """A ready app (state opened here, not in lifespan: httpx's ASGI transport sends none)."""
    config = config or EmulatorConfig()
    fixtures = config.fixtures
    models = {m["model_id"]: m for m in _load_fixture(fixtures, "models.json", [])}
    state = State(
        config,
        Store(config.db),
        random.Random(config.seed),
        models,
        {f["id"]: f for f in _load_fixture(fixtures, "flows.json", [])},
        {c["id"]: c for c in _load_fixture(fixtures, "conversations.json", [])},
        _load_fixture(fixtures, "metrics.json", {}),
    )
    table = endpoints()
    by_path: dict[str, list[Endpoint]] = {}
    for endpoint in table:
        by_path.setdefault(endpoint.template, []).append(endpoint)
    routes = [
        Route(path, _dispatch(state, group), methods=[e.method for e in group])
        for path, group in by_path.items()
    ]

    async def token(request: Request) -> Response:
        return await _token(state, request)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(table))

    routes += [
        Route("/oauth/token", token, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    routes += _admin_routes(state)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(ApiProblem(exc.status_code, str(exc.detail)))

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(ApiProblem(500, "internal error"))

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, 500: server_error})
    app.state.emulator = state
    return app


def _dispatch(state: State, group: list[Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    handlers = {e.method: _wrap(state, e) for e in group}

    async def route(request: Request) -> Response:
        return await handlers[request.method](request)

    return route
