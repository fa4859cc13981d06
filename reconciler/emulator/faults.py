"""Rate limiting and injected faults: latency, error statuses, lost responses, slow bodies and a
"concurrent writer" that edits a resource just before a client's write reaches it."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from reconciler.emulator.config import Faults
from reconciler.emulator.state import FUNCTIONS, PROMPTS, ApiProblem, State, Token, new_etag


class DropConnection(Exception):
    """Raised after the response has started, so the client sees the connection cut."""


def rate_headers(state: State, token: Token) -> dict[str, str]:
    now = state.now()
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


def maybe_fail(state: State, faults: Faults, draw: float) -> None:
    """Raise the injected error status whose share of [0, 1) ``draw`` falls in, if any."""
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


def dropped(response: Response) -> Response:
    """Start the response, then cut the connection: the client never gets a complete answer."""
    body = bytes(response.body)

    async def cut() -> Any:
        yield body[: len(body) // 2]
        raise DropConnection("injected: connection dropped after processing")

    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    headers["content-length"] = str(len(body))
    return StreamingResponse(cut(), status_code=response.status_code, headers=headers)


def slow(response: Response, total_ms: float) -> Response:
    body = bytes(response.body)
    pieces = 5

    async def trickle() -> Any:
        step = max(1, math.ceil(len(body) / pieces))
        for start in range(0, len(body), step):
            await asyncio.sleep(total_ms / 1000 / pieces)
            yield body[start : start + step]

    return StreamingResponse(trickle(), status_code=response.status_code, headers=dict(response.headers))


def concurrent_edit(state: State, request: Request, kind: str, resource_id: str) -> None:
    """The concurrent writer: an out-of-band edit that lands just before this client's write.

    It commits in its own transaction, as another client's write would: the write that follows
    may fail, but the edit stays.
    """
    armed = (kind, resource_id) in state.armed
    chance = state.config.faults.concurrent_writer
    if not armed and not (chance and state.draw(request, "concurrent_writer") < chance):
        return
    with state.store.transaction():
        current = state.store.get(kind, resource_id)
        if current is not None:
            edit_out_of_band(state, kind, resource_id, current)


def edit_out_of_band(state: State, kind: str, resource_id: str, current: dict[str, Any]) -> None:
    state.armed.discard((kind, resource_id))
    edited = dict(current)
    edited["labels"] = {**(current.get("labels") or {}), "edited-out-of-band": "true"}
    if kind == FUNCTIONS:
        edited["description"] = f"{current.get('description', '')} (edited out of band)"
        edited["version"] = int(current.get("version", 1)) + 1
    elif kind == PROMPTS:
        edited["template"] = f"{current.get('template', '')}\n(edited out of band)"
        edited["revision"] = int(current.get("revision", 1)) + 1
    edited.update(etag=new_etag(), dateModified=state.now_iso(), modifiedBy="someone-else")
    state.store.put(kind, resource_id, str(edited.get("name", resource_id)), edited)
    if kind == PROMPTS:
        state.store.add_version(resource_id, int(current.get("revision", 1)), current)
    state.edited.append({"kind": kind, "id": resource_id})
