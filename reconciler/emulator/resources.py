"""The API's resources: listings, the three configuration kinds with ETags and preconditions,
prompt history, and the read-only context (models, flows, conversations, analytics)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.emulator import validation
from reconciler.emulator.analytics import details_query
from reconciler.emulator.faults import concurrent_edit
from reconciler.emulator.state import (
    BASE,
    FUNCTIONS,
    NO_STORE,
    POLICIES,
    PROMPTS,
    ApiProblem,
    Handler,
    State,
    Token,
    json_body,
    new_etag,
    strong_match,
    weak_match,
)


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


def listing(kind: str) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        size, number = _page_params(request)
        name = request.query_params.get("name") if kind == PROMPTS else None
        with state.store.lock:
            total = state.store.count(kind, name)
            offset = (number - 1) * size
            # A page past the end is empty (schemathesis found that a huge pageNumber overflowed
            # SQLite's OFFSET into a 500).
            entities = state.store.page_text(kind, size, offset, name) if offset < total else []
        envelope = _envelope(request, [], total, size, number, {"name": name} if name else None)
        del envelope["entities"]
        # The stored bodies are JSON already (written by json.dumps, NaN refused on the way in):
        # spliced in as they are, the rest of the envelope encoded as JSONResponse would.
        rest = json.dumps(envelope, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text = '{"entities":[' + ",".join(entities) + "]," + rest[1:]
        return Response(text.encode("utf-8"), media_type="application/json")

    return handler


def static_listing(items: Callable[[State], list[dict[str, Any]]]) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        size, number = _page_params(request)
        everything = items(state)
        page = everything[(number - 1) * size : number * size]
        return JSONResponse(_envelope(request, page, len(everything), size, number))

    return handler


def _with_etag(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers={"ETag": body["etag"]})


def item_get(kind: str) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        resource_id = request.path_params["id"]
        body = state.store.get(kind, resource_id)
        if body is None:
            raise ApiProblem(404, f"{kind} {resource_id} not found")
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and weak_match(if_none_match, body["etag"]):
            return Response(status_code=304, headers={"ETag": body["etag"], **NO_STORE})
        return _with_etag(body)

    return handler


def _check_preconditions(
    state: State, request: Request, current: dict[str, Any] | None, verb: str = "updating"
) -> None:
    """RFC 9110 13.2.2 order: If-Match (strong), then If-None-Match (weak); lists and '*' allowed."""
    if_match, if_none_match = request.headers.get("if-match"), request.headers.get("if-none-match")
    etag = current["etag"] if current is not None else None
    if if_match is not None and not strong_match(if_match, etag):
        raise ApiProblem(412, "the resource has changed since the given ETag (If-Match)")
    if if_none_match is not None and weak_match(if_none_match, etag):
        raise ApiProblem(412, "the resource already exists (If-None-Match)")
    if current is not None and if_match is None and not state.config.lax:
        raise ApiProblem(428, f"{verb} an existing resource requires If-Match with its ETag")


def catalog(state: State, *, references: bool = True) -> validation.Catalog:
    """What bodies may refer to. Call it inside the store's transaction, so lookups are consistent."""

    def has(kind: str) -> Callable[[str], bool]:
        return (lambda i: state.store.get(kind, i) is not None) if references else (lambda i: True)

    return validation.Catalog(state.models, state.flows, has(FUNCTIONS), has(POLICIES))


def stamp(
    state: State,
    body: dict[str, Any],
    kind: str,
    resource_id: str,
    token: Token,
    previous: dict[str, Any] | None,
) -> None:
    now = state.now_iso()
    body.update(
        etag=new_etag(),
        selfUri=f"{BASE}/{kind}/{resource_id}",
        dateModified=now,
        modifiedBy=token.client_id,
        dateCreated=previous["dateCreated"] if previous else now,
    )


def item_put(kind: str) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        resource_id = request.path_params["id"]
        incoming = await json_body(request)
        concurrent_edit(state, request, kind, resource_id)
        with state.store.transaction():
            current = state.store.get(kind, resource_id)
            _check_preconditions(state, request, current)
            try:
                if kind == FUNCTIONS:
                    body = validation.function_definition(resource_id, incoming)
                    body["version"] = int(current["version"]) + 1 if current else 1
                elif kind == POLICIES:
                    body = validation.context_policy(resource_id, incoming, catalog(state))
                else:
                    body = validation.prompt(incoming, catalog(state))
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
            stamp(state, body, kind, resource_id, token, current)
            state.store.put(
                kind,
                resource_id,
                str(body.get("name", resource_id)) if kind == PROMPTS else resource_id,
                body,
            )
        headers = {"ETag": body["etag"]}
        if current is None:
            headers["Location"] = body["selfUri"]
        return JSONResponse(body, status_code=200 if current else 201, headers=headers)

    return handler


def item_delete(kind: str) -> Handler:
    async def handler(state: State, request: Request, token: Token) -> Response:
        resource_id = request.path_params["id"]
        concurrent_edit(state, request, kind, resource_id)
        with state.store.transaction():
            current = state.store.get(kind, resource_id)
            if current is None:
                raise ApiProblem(404, f"{kind} {resource_id} not found")
            _check_preconditions(state, request, current, "deleting")
            state.store.delete(kind, resource_id)
        return Response(status_code=204)

    return handler


async def create_prompt(state: State, request: Request, token: Token) -> Response:
    incoming = await json_body(request)
    with state.store.transaction():
        try:
            body = validation.prompt(incoming, catalog(state))
        except validation.Invalid as exc:
            raise ApiProblem(400, exc.message, "invalid.value", exc.field) from None
        if state.store.find_by_name(PROMPTS, body["name"]) is not None:
            raise ApiProblem(409, f"a prompt named {body['name']!r} already exists", field="name")
        resource_id = str(uuid.UUID(int=state.rng.getrandbits(128), version=4))
        body["id"], body["revision"] = resource_id, 1
        stamp(state, body, PROMPTS, resource_id, token, None)
        state.store.put(PROMPTS, resource_id, body["name"], body)
    return JSONResponse(body, status_code=201, headers={"ETag": body["etag"], "Location": body["selfUri"]})


async def prompt_versions(state: State, request: Request, token: Token) -> Response:
    resource_id = request.path_params["id"]
    if state.store.get(PROMPTS, resource_id) is None:
        raise ApiProblem(404, f"prompt {resource_id} not found")
    size, number = _page_params(request)
    history = state.store.versions(resource_id)
    return JSONResponse(
        _envelope(request, history[(number - 1) * size : number * size], len(history), size, number)
    )


async def capacity(state: State, request: Request, token: Token) -> Response:
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


def lookup(
    collection: Callable[[State], dict[str, dict[str, Any]]],
    param: str,
    noun: str,
    shape: Callable[[dict[str, Any], bool], dict[str, Any]] = lambda body, real_only: body,
) -> Handler:
    """A read-only record by id, served by ``shape`` (the platform's fields, and the documents'
    variants unless the emulator serves real shapes only: see ``emulator.platform``)."""

    async def handler(state: State, request: Request, token: Token) -> Response:
        found = collection(state).get(request.path_params[param])
        if found is None:
            raise ApiProblem(404, f"{noun} {request.path_params[param]} not found")
        return JSONResponse(shape(found, state.config.real_shapes_only))

    return handler


async def analytics(state: State, request: Request, token: Token) -> Response:
    """The conversation details query, answered from synthetic traffic (``emulator.analytics``)."""
    return await details_query(state, request, token)
