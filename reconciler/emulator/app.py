"""The Genesys Cloud LLM Gateway emulator: a real ASGI app that behaves like the service.

It implements docs/API.md strictly (OAuth client credentials with scopes, ETag/If-Match with 412 and
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
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reconciler.emulator.admin import admin_routes
from reconciler.emulator.auth import READ_SCOPE, WRITE_SCOPE, authorize, issue_token, organization
from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.faults import dropped, maybe_fail, rate_headers, slow
from reconciler.emulator.openapi import openapi_document
from reconciler.emulator.platform import complete_conversation, complete_flow, conversation_body, flow_body
from reconciler.emulator.resources import (
    analytics,
    capacity,
    create_prompt,
    item_delete,
    item_get,
    item_put,
    listing,
    lookup,
    prompt_versions,
    static_listing,
)
from reconciler.emulator.state import (
    BASE,
    FUNCTIONS,
    NO_STORE,
    POLICIES,
    PROMPTS,
    ApiProblem,
    Endpoint,
    State,
    error_response,
)
from reconciler.emulator.store import Store

__all__ = ["ApiProblem", "Endpoint", "State", "create_app", "endpoints", "error_response"]


def _load_fixture(state_dir: Any, name: str, default: Any) -> Any:
    path = state_dir / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def _wrap(state: State, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        state.requests[f"{request.method} {endpoint.template}"] += 1
        faults = state.config.faults
        headers: dict[str, str] = NO_STORE
        request.state.identity = state.request_identity(request)
        try:
            if faults.latency_ms or faults.jitter_ms:
                jitter = state.draw(request, "jitter") * faults.jitter_ms
                await asyncio.sleep((faults.latency_ms + jitter) / 1000)
            token = authorize(state, request, endpoint.scope)
            headers = {**NO_STORE, **rate_headers(state, token)}
            maybe_fail(state, faults, state.draw(request, "fail"))
            response = await endpoint.handler(state, request, token)
        except ApiProblem as problem:
            problem.headers = {**headers, **problem.headers}
            response = error_response(problem)
        response.headers.update(headers)
        if request.method == "HEAD":
            # The GET answer's status and headers (Content-Length included), without its body.
            response = Response(status_code=response.status_code, headers=dict(response.headers))
        state.statuses[response.status_code] += 1
        if faults.drop and state.draw(request, "drop") < faults.drop:
            return dropped(response)
        if faults.slow_body_ms and response.status_code != 304:
            return slow(response, faults.slow_body_ms)
        return response

    return run


def endpoints() -> list[Endpoint]:
    """Every API route, in one table: routing, counters and the OpenAPI document all read it."""
    out: list[Endpoint] = []
    for kind in (FUNCTIONS, PROMPTS, POLICIES):
        collection, item = f"{BASE}/{kind}", f"{BASE}/{kind}/{{id}}"
        out += [
            Endpoint("GET", collection, READ_SCOPE[kind], listing(kind)),
            Endpoint("GET", item, READ_SCOPE[kind], item_get(kind)),
            Endpoint("PUT", item, WRITE_SCOPE[kind], item_put(kind), writes=True),
            Endpoint("DELETE", item, WRITE_SCOPE[kind], item_delete(kind), writes=True),
        ]
    out += [
        Endpoint("POST", f"{BASE}/prompts", "ai:llm:manage", create_prompt, writes=True),
        Endpoint("GET", f"{BASE}/prompts/{{id}}/versions", "ai:llm:manage", prompt_versions),
        Endpoint("GET", f"{BASE}/models", "ai:llm:read", static_listing(lambda s: list(s.models.values()))),
        Endpoint("GET", f"{BASE}/models/{{modelId}}/capacity", "ai:llm:read", capacity),
        Endpoint(
            "GET",
            "/api/v2/flows/{flowId}",
            "flow:read",
            lookup(lambda s: s.flows, "flowId", "flow", flow_body),
        ),
        Endpoint(
            "GET",
            "/api/v2/conversations/{conversationId}",
            "conversation:view",
            lookup(lambda s: s.conversations, "conversationId", "conversation", conversation_body),
        ),
        # No permission needed, as on the service: plans record which org they were made for.
        Endpoint("GET", "/api/v2/organizations/me", "", organization),
        Endpoint(
            "POST",
            "/api/v2/analytics/conversations/details/query",
            "analytics:conversations:view",
            analytics,
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
        # Both shapes of each record, the platform's and the documents' (see emulator.platform).
        {f["id"]: complete_flow(f) for f in _load_fixture(fixtures, "flows.json", [])},
        {c["id"]: complete_conversation(c) for c in _load_fixture(fixtures, "conversations.json", [])},
        _load_fixture(fixtures, "metrics.json", {}),
        fault_seed=str(config.seed),
        clock_offset_s=config.clock_offset_s,
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
        return await issue_token(state, request)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(table), headers=NO_STORE)

    routes += [
        Route("/oauth/token", token, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    routes += admin_routes(state)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        # Starlette's 405 carries the Allow header (RFC 9110 15.5.6); keep whatever it sends.
        return error_response(ApiProblem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {})))

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(ApiProblem(500, "internal error"))

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, 500: server_error})
    app.state.emulator = state
    return app


def _dispatch(state: State, group: list[Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    handlers = {e.method: _wrap(state, e) for e in group}
    if "GET" in handlers:
        handlers["HEAD"] = handlers["GET"]  # HEAD wherever GET is (RFC 9110 9.3.2)

    async def route(request: Request) -> Response:
        return await handlers[request.method](request)

    return route
