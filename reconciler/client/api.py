"""The LLM Gateway API in the reconciler's terms: live state in, writes out.

``GatewayClient`` turns listings into ``LiveResource`` values (through each kind's adapter),
fetches the read-only context the planner checks against (model capacities, flow inputs), and
offers the conditional writes apply needs (If-Match, If-None-Match). It never decides whether to
write: that is the plan's job, and how to react to a failed write is apply's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import orjson

from reconciler.client.http import HttpSession
from reconciler.errors import ApiError, ApiErrorInfo, NotFoundError, RenderError, TransportError
from reconciler.kinds import adapter_for, flow_inputs_from
from reconciler.models import Kind, LiveResource

T = TypeVar("T")

# The OAuth scopes a token asks for: reading (plan, drift, export, render, metrics) needs the
# kinds' read scopes and the context the live checks, previews and metrics read; writing (apply,
# rollback) adds the kinds' write scopes. Named once here, next to the calls that need them.
READ_SCOPES = frozenset(
    {
        *(adapter_for(kind).read_scope for kind in Kind),
        "ai:llm:read",  # models and their capacity
        "flow:read",  # flow inputs (live checks, attribute typing)
        "conversation:view",  # render --conversation-id
        "analytics:conversations:view",  # metrics, the health gate, traffic in previews
        "ai:metrics:read",  # the same: the LLM metrics of those conversations
    }
)
WRITE_SCOPES = READ_SCOPES | {adapter_for(kind).write_scope for kind in Kind}
PAGE_SIZE = 100  # the service's maximum: fewest round trips for a full listing
ANALYTICS_PATH = "/api/v2/analytics/conversations/details/query"
ANALYTICS_PAGE_SIZE = 200
ANALYTICS_METRICS = ("aiLatency", "aiTokensUsed", "aiSuccessRate")
# A bound on one query's pages: a service that keeps answering with a next page cannot hold a
# run forever (200 000 conversation records at the page size above).
ANALYTICS_MAX_PAGES = 1000


@dataclass(frozen=True)
class WriteResult:
    """What the service stored after a write: its id, new etag and body (wire casing)."""

    live_id: str
    etag: str
    body: dict[str, Any]


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Twenty digits in a row may be an integer over 64 bits, which orjson reads as a float (rounded)
# instead of refusing it. Found by mapping every digit to "0" and anything else to " ": 65 us for
# a listing page, where the regex \d{20} took 1.1 ms (more than decoding the page).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 20


def _json(response: httpx.Response) -> Any:
    """A response body as JSON: orjson (listings of 10,000 resources decode ~3x faster), and the
    standard library for what orjson refuses (NaN) or would round (integers over 64 bits), so
    nothing changes."""
    content = response.content
    if _LONG_NUMBER not in content.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    return response.json()


def _itself(entity: dict[str, Any]) -> dict[str, Any]:
    return entity


def _etag_of(response: httpx.Response, body: dict[str, Any]) -> str:
    return str(body.get("etag") or response.headers.get("ETag", ""))


class GatewayClient:
    """One org's LLM Gateway configuration, reached through a shared ``HttpSession``."""

    def __init__(self, session: HttpSession, parallelism: int = 10) -> None:
        self.session = session
        self.parallelism = max(1, parallelism)
        self._gate = asyncio.Semaphore(self.parallelism)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with self._gate:
            return await self.session.request(method, path, **kwargs)

    # --- reading -----------------------------------------------------------------------------

    async def list_raw(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every entity of a page-number listing: page 1 first, then the rest concurrently."""
        return await self._listing(path, params, _itself)

    async def _listing(
        self, path: str, params: dict[str, Any] | None, each: Callable[[dict[str, Any]], T]
    ) -> list[T]:
        """``each`` of every entity of a listing, in listing order. Each page is decoded and
        mapped as soon as it arrives, so that work overlaps the wait for the other pages."""
        query = {**(params or {}), "pageSize": PAGE_SIZE, "pageNumber": 1}
        first = _json(await self._call("GET", path, params=query))
        found = [each(entity) for entity in first.get("entities", [])]
        page_count = int(first.get("pageCount") or 0)
        if not page_count and first.get("total"):
            page_count = math.ceil(int(first["total"]) / PAGE_SIZE)

        async def page(number: int) -> list[T]:
            body = _json(await self._call("GET", path, params={**query, "pageNumber": number}))
            return [each(entity) for entity in body.get("entities", [])]

        for rest in await asyncio.gather(*(page(n) for n in range(2, page_count + 1))):
            found.extend(rest)
        return found

    async def list_kind(self, kind: Kind) -> list[LiveResource]:
        adapter = adapter_for(kind)
        return await self._listing(adapter.collection_path, None, adapter.from_wire)

    async def live_state(self, kinds: Sequence[Kind] = tuple(Kind)) -> list[LiveResource]:
        """All live resources of the given kinds, every kind listed concurrently."""
        per_kind = await asyncio.gather(*(self.list_kind(kind) for kind in kinds))
        return [resource for resources in per_kind for resource in resources]

    async def organization_id(self) -> str:
        """The id of the org these credentials reach (GET /api/v2/organizations/me)."""
        body = (await self._call("GET", "/api/v2/organizations/me")).json()
        org = body.get("id") if isinstance(body, dict) else None
        if not isinstance(org, str) or not org:
            raise TransportError(
                ApiErrorInfo(200, "bad.response", "organizations/me answered without an org id")
            )
        return org

    async def get(self, kind: Kind, live_id: str) -> tuple[LiveResource, dict[str, Any]] | None:
        """One resource by its live id, or None when it does not exist."""
        adapter = adapter_for(kind)
        try:
            response = await self._call("GET", adapter.item_path(live_id))
        except NotFoundError:
            return None
        body = _json(response)
        body.setdefault("etag", response.headers.get("ETag", ""))
        return adapter.from_wire(body), body

    async def find_prompt(self, name: str) -> tuple[LiveResource, dict[str, Any]] | None:
        """The prompt with this exact name (names are unique), or None."""
        adapter = adapter_for(Kind.PROMPT)
        for body in await self.list_raw(adapter.collection_path, {"name": name}):
            if body.get("name") == name:
                return adapter.from_wire(body), body
        return None

    async def find(self, kind: Kind, name: str) -> tuple[LiveResource, dict[str, Any]] | None:
        """A resource by its identity (metadata.name), whatever the kind's id strategy."""
        if adapter_for(kind).id_strategy == "post":
            return await self.find_prompt(name)
        return await self.get(kind, name)

    async def prompt_versions(self, live_id: str) -> list[dict[str, Any]]:
        return await self.list_raw(adapter_for(Kind.PROMPT).item_path(live_id) + "/versions")

    async def model_capacities(self, model_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The capacity document (max_tokens, compaction_enabled, supported_formats,
        max_context_windows) of every known model: one listing, and a capacity call only for a
        model in ``model_ids`` whose listing entry lacks max_tokens."""
        models = await self.list_raw("/api/v2/ai/llm/models")
        found: dict[str, dict[str, Any]] = {}
        for model in models:
            model_id = str(model.get("model_id") or model.get("id") or "")
            if "max_tokens" in model:
                found[model_id] = dict(model)
            elif model_id in model_ids:
                capacity = (await self._call("GET", f"/api/v2/ai/llm/models/{model_id}/capacity")).json()
                found[model_id] = dict(capacity)
        return found

    async def flow_inputs(self, flow_id: str) -> dict[str, str] | None:
        """A flow's input names and data types, or None when the flow does not exist.

        Read by ``kinds.flow_inputs_from``: the platform's ``inputSchema`` first, the
        documents' ``inputDefinitions`` second. A body it cannot read is a bad response.
        """
        try:
            flow = (await self._call("GET", f"/api/v2/flows/{flow_id}")).json()
        except NotFoundError:
            return None
        try:
            return flow_inputs_from(flow, f"flow {flow_id}")
        except RenderError as exc:
            raise TransportError(
                ApiErrorInfo(200, "bad.response", str(exc), method="GET", url=f"/api/v2/flows/{flow_id}")
            ) from None

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        response = await self._call("GET", f"/api/v2/conversations/{conversation_id}")
        body: dict[str, Any] = response.json()
        return body

    async def conversation_details(
        self, prompt_ids: Sequence[str], start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """Every conversation detail record of these prompts in [start, end), all pages.

        One POST of the analytics query (view ``ai_llm_gateway``, filter ``aiPromptId``), then the
        same query sent to each ``nextPageUri`` until there is none. Pages are followed one after
        another: each is only known from the one before. A next page outside the analytics path is
        refused rather than followed: our bearer token goes wherever we send the request.
        """
        if not prompt_ids:
            return []
        query = {
            "interval": f"{_instant(start)}/{_instant(end)}",
            "dateFrom": _instant(start),
            "dateTo": _instant(end),
            "view": "ai_llm_gateway",
            "filters": [{"filterType": "string", "type": "aiPromptId", "values": list(prompt_ids)}],
            "metrics": list(ANALYTICS_METRICS),
            "pageSize": ANALYTICS_PAGE_SIZE,
        }
        records: list[dict[str, Any]] = []
        path, seen = ANALYTICS_PATH, set[str]()
        while True:
            body = (await self._call("POST", path, json=query)).json()
            records.extend(e for e in body.get("entities") or [] if isinstance(e, dict))
            following = body.get("nextPageUri")
            if not following:
                return records
            following = str(following)
            if (
                not following.startswith(ANALYTICS_PATH)
                or following in seen
                or len(seen) >= ANALYTICS_MAX_PAGES
            ):
                raise ApiError(
                    ApiErrorInfo(
                        0,
                        "bad.paging",
                        f"the analytics query's next page {following!r} cannot be followed",
                        method="POST",
                        url=path,
                    )
                )
            seen.add(following)
            path = following

    # --- writing -----------------------------------------------------------------------------

    async def put(
        self,
        kind: Kind,
        live_id: str,
        body: dict[str, Any],
        *,
        if_match: str | None = None,
        create_only: bool = False,
    ) -> WriteResult:
        """Upsert by client id. ``if_match`` guards an update; ``create_only`` a create."""
        headers = {"If-Match": if_match} if if_match else {}
        if create_only:
            headers["If-None-Match"] = "*"
        response = await self._call("PUT", adapter_for(kind).item_path(live_id), json=body, headers=headers)
        stored = _json(response)
        return WriteResult(str(stored.get("id", live_id)), _etag_of(response, stored), stored)

    async def create_prompt(self, body: dict[str, Any]) -> WriteResult:
        """POST a new prompt. Never retried here on 5xx or a lost response: see apply."""
        response = await self._call(
            "POST", adapter_for(Kind.PROMPT).collection_path, json=body, idempotent=False
        )
        stored = response.json()
        return WriteResult(str(stored["id"]), _etag_of(response, stored), stored)

    async def delete(self, kind: Kind, live_id: str, *, if_match: str | None) -> None:
        headers = {"If-Match": if_match} if if_match else {}
        await self._call("DELETE", adapter_for(kind).item_path(live_id), headers=headers)
