"""Synthetic traffic for the analytics query: conversation detail records nobody has to store.

Every live prompt receives calls at ``Traffic.calls_per_second`` (split across its variants by
weight) from the moment it was created. The calls of one (prompt id, variant) stream sit at
fixed times ``origin + (j + phase) / rate``; call ``j``'s numbers come from a hash of (seed,
prompt id, variant, rate segment, j). So any window's records can be computed on demand, and two
queries over the same past window always agree, whatever else was asked in between.

How a call turns out follows the prompt's behaviour at the call's time: healthy by default,
changed "from now on" by ``PUT /__emulator/metrics``. Failures are spread evenly over the calls
(Bresenham-style on ``j``) instead of drawn one by one, so even a few seconds of traffic show a
success rate within one call of the behaviour's: tests over short windows do not flake.

Prompt ids the emulator does not host answer with one aggregate entity from the fixture
(``metrics.json``), as the emulator did before it generated traffic.

This module must not share code with the client: it is the other side of the wire.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.emulator.config import Behaviour, Traffic
from reconciler.emulator.platform import analytics_conversation
from reconciler.emulator.state import PROMPTS, ApiProblem, State, Token, iso, json_body

QUERY_PATH = "/api/v2/analytics/conversations/details/query"
VIEW = "ai_llm_gateway"
METRICS = ("aiLatency", "aiTokensUsed", "aiSuccessRate")
# The same numbers as the fixture's default: what a prompt nobody has touched looks like.
HEALTHY_SUCCESS_RATE = 0.97
HEALTHY_LATENCY_MS = 820.0
HEALTHY_TOKENS_PER_CALL = 1450.0
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# The real details query refuses intervals longer than this; it also bounds the work per query.
MAX_INTERVAL_S = 31 * 86400


def healthy(prompt: str, since: float = 0.0, variant: str | None = None) -> Behaviour:
    return Behaviour(
        since, prompt, variant, HEALTHY_SUCCESS_RATE, HEALTHY_LATENCY_MS, HEALTHY_TOKENS_PER_CALL
    )


def _unit(digest: bytes, start: int) -> float:
    return int.from_bytes(digest[start : start + 8], "big") / 2**64


def _hash(*parts: object) -> bytes:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()


def parse_instant(text: Any, field: str) -> float:
    """An ISO-8601 date or date-time as epoch seconds (UTC when no offset is given)."""
    if not isinstance(text, str):
        raise ApiProblem(400, f"{field} must be an ISO-8601 date-time", "invalid.value", field)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApiProblem(
            400, f"{field}: {text!r} is not an ISO-8601 date-time", "invalid.value", field
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class Segment:
    """A stretch of time with one traffic rate (calls per second per prompt)."""

    index: int
    start: float
    end: float
    rate: float


def segments(traffic: Traffic) -> list[Segment]:
    """The rate timeline: the configured rate from the epoch, then each change from its moment."""
    points = [(0.0, traffic.calls_per_second), *traffic.rate_changes]
    return [
        Segment(i, start, points[i + 1][0] if i + 1 < len(points) else math.inf, rate)
        for i, (start, rate) in enumerate(points)
    ]


@dataclass(frozen=True)
class Stream:
    """The calls one prompt's variant receives ("" is a prompt without variants)."""

    prompt_id: str
    prompt: str
    variant: str
    share: float  # of the prompt's traffic, 0..1
    created: float

    def phase(self, seed: int, purpose: str) -> float:
        return _unit(_hash(seed, self.prompt_id, self.variant, purpose), 0)


def streams_of(body: dict[str, Any]) -> list[Stream]:
    created = parse_instant(body.get("dateCreated") or "1970-01-01T00:00:00Z", "dateCreated")
    variants = [v for v in body.get("variants") or [] if isinstance(v, dict)]
    total = sum(float(v.get("weight") or 0) for v in variants)
    if not variants or total <= 0:
        return [Stream(str(body["id"]), str(body["name"]), "", 1.0, created)]
    return [
        Stream(
            str(body["id"]),
            str(body["name"]),
            str(v.get("name")),
            float(v.get("weight") or 0) / total,
            created,
        )
        for v in variants
    ]


def behaviour_at(traffic: Traffic, stream: Stream, moment: float) -> Behaviour:
    """The latest behaviour set for this prompt (or this variant of it) at or before ``moment``."""
    found = healthy(stream.prompt)
    for change in traffic.behaviours:
        if change.since > moment:
            break
        if change.prompt == stream.prompt and change.variant in (None, stream.variant):
            found = change
    return found


@dataclass(frozen=True)
class Piece:
    """Calls ``first``..``stop - 1`` of a stream within one rate segment."""

    stream: Stream
    segment: Segment
    origin: float
    rate: float
    first: int
    stop: int

    @property
    def count(self) -> int:
        return max(0, self.stop - self.first)


def pieces(traffic: Traffic, stream: Stream, start: float, end: float, now: float) -> Iterator[Piece]:
    """Where a window's calls of ``stream`` are; calls exist only between creation and now."""
    phase = stream.phase(traffic.seed, "time")
    for segment in segments(traffic):
        rate = segment.rate * stream.share
        low = max(start, stream.created, segment.start)
        high = min(end, now, segment.end)
        if rate <= 0 or high <= low:
            continue
        origin = segment.start
        first = math.ceil((low - origin) * rate - phase)
        stop = math.ceil((high - origin) * rate - phase)
        if stop > first:
            yield Piece(stream, segment, origin, rate, first, stop)


def call_record(traffic: Traffic, piece: Piece, j: int, metrics: list[str]) -> dict[str, Any]:
    """Conversation detail record number ``j`` of a piece's stream (the same on every query)."""
    stream = piece.stream
    moment = piece.origin + (j + stream.phase(traffic.seed, "time")) / piece.rate
    behaviour = behaviour_at(traffic, stream, moment)
    digest = _hash(traffic.seed, stream.prompt_id, stream.variant, piece.segment.index, j)
    failing = 1.0 - behaviour.success_rate
    offset = stream.phase(traffic.seed, "failures")
    failed = math.floor((j + 1) * failing + offset) - math.floor(j * failing + offset) >= 1
    values = {
        "aiLatency": round(behaviour.latency_ms * (0.7 + 0.6 * _unit(digest, 0))),
        "aiTokensUsed": round(behaviour.tokens_per_call * (0.8 + 0.4 * _unit(digest, 8))),
        "aiSuccessRate": 0.0 if failed else 1.0,
    }
    record: dict[str, Any] = {
        "conversationId": str(uuid.UUID(bytes=digest[16:32], version=4)),
        "conversationStart": iso(moment),
        "aiPromptId": stream.prompt_id,
    }
    if stream.variant:
        record["aiPromptVariant"] = stream.variant
    record.update({m: values.get(m) for m in metrics})
    return record


def _interval(query: dict[str, Any], real_only: bool) -> tuple[float, float]:
    """The platform's required ``interval``; the documents' ``dateFrom``/``dateTo`` beside it
    unless the emulator serves real shapes only."""
    interval = query.get("interval")
    if interval is not None:
        if not isinstance(interval, str) or interval.count("/") != 1:
            raise ApiProblem(400, "interval must be 'start/end' in ISO-8601", "invalid.value", "interval")
        first, last = interval.split("/")
        start, end = parse_instant(first, "interval"), parse_instant(last, "interval")
    elif not real_only and "dateFrom" in query and "dateTo" in query:
        start, end = parse_instant(query["dateFrom"], "dateFrom"), parse_instant(query["dateTo"], "dateTo")
    else:
        raise ApiProblem(400, "interval is required ('start/end' in ISO-8601)", "invalid.value", "interval")
    if end <= start:
        raise ApiProblem(400, "the interval must end after it starts", "invalid.value", "interval")
    if end - start > MAX_INTERVAL_S:
        raise ApiProblem(400, "the interval may span at most 31 days", "invalid.value", "interval")
    return start, end


def _positive_int(value: Any, field: str, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ApiProblem(400, f"{field} must be an integer in [1, {high}]", "invalid.value", field)
    return value


def _paging(query: dict[str, Any], request: Request, real_only: bool) -> tuple[int, int]:
    """The platform's ``paging`` object; the documents' top-level ``pageSize``/``pageNumber``
    and the ``nextPageUri`` query string beside it unless real shapes only."""
    paging = query.get("paging") or {}
    if not isinstance(paging, dict):
        raise ApiProblem(400, "paging must be an object", "invalid.value", "paging")
    documents = {} if real_only else query
    size = _positive_int(
        paging.get("pageSize", documents.get("pageSize", DEFAULT_PAGE_SIZE)), "pageSize", MAX_PAGE_SIZE
    )
    number: Any = paging.get("pageNumber", documents.get("pageNumber", 1))
    if not real_only and "pageNumber" in request.query_params:
        try:
            number = int(request.query_params["pageNumber"])
        except ValueError:
            raise ApiProblem(400, "pageNumber must be an integer", "invalid.value", "pageNumber") from None
    return size, _positive_int(number, "pageNumber")


def _prompt_ids(query: dict[str, Any]) -> list[str]:
    filters = query.get("filters", [])
    if not isinstance(filters, list) or not all(
        isinstance(f, dict) and isinstance(f.get("values", []), list) for f in filters
    ):
        raise ApiProblem(400, "filters must be a list of {type, values: [...]}", "invalid.value", "filters")
    ids = [str(v) for f in filters if f.get("type") == "aiPromptId" for v in f.get("values", [])]
    return list(dict.fromkeys(ids))


async def details_query(state: State, request: Request, token: Token) -> Response:
    """``POST /api/v2/analytics/conversations/details/query`` over the synthetic traffic.

    Two request shapes: the platform's (the SDK's ``ConversationQuery``: a required
    ``interval``, ``paging``) and the documents' (``view: ai_llm_gateway``, ``aiPromptId``
    filters, ``metrics``, ``dateFrom``/``dateTo``). Without a prompt filter the query covers
    every hosted prompt. The answer carries the platform's ``conversations`` (see
    ``emulator.platform.analytics_conversation``) and ``totalHits``, and the documents' flat
    ``entities`` beside them. Serving real shapes only, the documents' request fields are
    ignored (as the platform ignores fields it does not know) and their answer left out.
    """
    if "ai:metrics:read" not in token.scopes:
        raise ApiProblem(403, "Missing the permission (scope) ai:metrics:read", "missing.permissions")
    real_only = state.config.real_shapes_only
    query = await json_body(request)
    if not real_only and query.get("view", VIEW) != VIEW:
        raise ApiProblem(400, f"view must be {VIEW}", "invalid.value", "view")
    ids = [] if real_only else _prompt_ids(query)
    metrics = list(METRICS) if real_only else query.get("metrics") or list(METRICS)
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise ApiProblem(400, "metrics must be a list of metric names", "invalid.value", "metrics")
    start, end = _interval(query, real_only)
    size, number = _paging(query, request, real_only)
    now = state.now()
    traffic = state.config.traffic
    default = state.metrics.get("default", {})
    # One entry per stream, in filter order: the pieces of a hosted prompt's streams, or the
    # fixture's aggregate for an id the emulator does not host.
    parts: list[Piece | dict[str, Any]] = []
    with state.store.lock:
        if not ids:
            ids = [str(b["id"]) for b in state.store.page(PROMPTS, state.store.count(PROMPTS), 0)]
        bodies = {i: state.store.get(PROMPTS, i) for i in ids}
    for prompt_id in ids:
        body = bodies[prompt_id]
        if body is None:
            parts.append(
                {
                    "aiPromptId": prompt_id,
                    **{m: state.metrics.get(prompt_id, default).get(m) for m in metrics},
                }
            )
            continue
        for stream in streams_of(body):
            parts.extend(pieces(traffic, stream, start, end, now))
    total = sum(p.count if isinstance(p, Piece) else 1 for p in parts)
    skip, wanted = (number - 1) * size, size
    page: list[dict[str, Any]] = []
    for part in parts:
        count = part.count if isinstance(part, Piece) else 1
        if skip >= count:
            skip -= count
            continue
        if isinstance(part, Piece):
            stop = min(part.stop, part.first + skip + wanted)
            page.extend(call_record(traffic, part, j, metrics) for j in range(part.first + skip, stop))
        else:
            page.append(part)
        skip, wanted = 0, size - len(page)
        if wanted <= 0:
            break
    conversations = [analytics_conversation(r) for r in page if "conversationId" in r]
    if real_only:
        return JSONResponse({"conversations": conversations, "totalHits": total})
    answer: dict[str, Any] = {
        "entities": page,
        "conversations": conversations,
        "totalHits": total,
        "pageSize": size,
        "pageNumber": number,
        "interval": f"{iso(start)}/{iso(end)}",
    }
    if number * size < total:
        answer["nextPageUri"] = f"{QUERY_PATH}?pageNumber={number + 1}"
    return JSONResponse(answer)
