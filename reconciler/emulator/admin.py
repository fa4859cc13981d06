"""`/__emulator/*`: the test harness's controls (reset, stats, faults, concurrent writer, bulk load,
prompt behaviour and traffic rate for the synthetic analytics, and the emulator's clock).

Never faulted, never rate limited; not part of the service's API. Guarded by the admin token
whenever the config has one (always, when the emulator listens beyond loopback). Bodies are read
with the same limits as the API's (bulk gets a larger one: it loads thousands of resources at a
time) and checked field by field: a malformed body is a 400, never a 500.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reconciler.emulator import validation
from reconciler.emulator.analytics import healthy
from reconciler.emulator.auth import check_admin
from reconciler.emulator.config import Behaviour, Faults
from reconciler.emulator.resources import catalog, stamp
from reconciler.emulator.state import (
    FUNCTIONS,
    MAX_BODY,
    NO_STORE,
    POLICIES,
    PROMPTS,
    ApiProblem,
    State,
    Token,
    error_response,
    parse_json_object,
    read_body,
)

PREFIX = "/__emulator"
BULK_LIMIT = 64 * MAX_BODY
FAULT_STATUSES = (429, 500, 502, 503, 504)
Admin = Callable[[Request], Awaitable[Response]]


async def _body(request: Request, limit: int = MAX_BODY) -> dict[str, Any]:
    raw = await read_body(request, limit)
    return parse_json_object(raw) if raw.strip() else {}


def _number(body: dict[str, Any], key: str, default: float, low: float = 0, high: float = math.inf) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ApiProblem(400, f"{key} must be a number in [{low}, {high}]", "invalid.value", key)
    return float(value)


def _integer(body: dict[str, Any], key: str, default: int, low: int = 0) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ApiProblem(400, f"{key} must be an integer >= {low}", "invalid.value", key)
    return value


def _fail_rules(value: Any) -> dict[int, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiProblem(400, "fail must map a status to a probability", "invalid.value", "fail")
    rules: dict[int, float] = {}
    for status, probability in value.items():
        if not (isinstance(status, str) and status.isascii() and status.isdigit()):
            raise ApiProblem(400, f"fail: {status!r} is not a status code", "invalid.value", "fail")
        if int(status) not in FAULT_STATUSES:
            raise ApiProblem(400, f"fail: status must be one of {FAULT_STATUSES}", "invalid.value", "fail")
        rules[int(status)] = _number({"p": probability}, "p", 0, 0, 1)
    return rules


def _items(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    items = body.get(kind, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ApiProblem(400, f"{kind} must be a list of objects", "invalid.value", kind)
    return items


# The clock moves forward only, by at most what one analytics window may span.
MAX_ADVANCE_S = 31 * 86400


def _advance(body: dict[str, Any]) -> float:
    """``{"advance_s": N}`` with 0 < N <= MAX_ADVANCE_S, checked."""
    unknown = sorted(set(body) - {"advance_s"})
    if unknown:
        raise ApiProblem(400, f"unknown field(s) {unknown}", "invalid.value", unknown[0])
    value = body.get("advance_s")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_ADVANCE_S:
        raise ApiProblem(
            400,
            f"advance_s must be a number of seconds in (0, {MAX_ADVANCE_S}]",
            "invalid.value",
            "advance_s",
        )
    return float(value)


BEHAVIOUR_FIELDS = {"successRate", "latencyMs", "tokensPerCall", "variant"}
MAX_CALLS_PER_SECOND = 10_000


def _behaviours(body: dict[str, Any], since: float) -> list[Behaviour]:
    """``{"<prompt name>": {"successRate", "latencyMs", "tokensPerCall", "variant"?}}``, checked."""
    changes = []
    for name, spec in body.items():
        if not name or not isinstance(spec, dict):
            raise ApiProblem(400, f"{name!r}: expected an object of behaviour fields", "invalid.value", name)
        unknown = sorted(set(spec) - BEHAVIOUR_FIELDS)
        if unknown:
            raise ApiProblem(400, f"{name}: unknown field(s) {unknown}", "invalid.value", name)
        variant = spec.get("variant")
        if variant is not None and (not isinstance(variant, str) or not variant):
            raise ApiProblem(400, f"{name}: variant must be a non-empty string", "invalid.value", "variant")
        base = healthy(name)
        changes.append(
            Behaviour(
                since,
                name,
                variant,
                _number(spec, "successRate", base.success_rate, 0, 1),
                _number(spec, "latencyMs", base.latency_ms, 0, 600_000),
                _number(spec, "tokensPerCall", base.tokens_per_call, 0, 1_000_000),
            )
        )
    return changes


def admin_routes(state: State) -> list[Route]:
    async def reset(request: Request) -> Response:
        state.store.reset()
        state.requests.clear()
        state.statuses.clear()
        state.armed.clear()
        state.edited.clear()
        state.config.traffic.behaviours.clear()
        return JSONResponse({"reset": True})

    async def stats(request: Request) -> Response:
        return JSONResponse(
            {
                "requests": dict(state.requests),
                "statuses": {str(k): v for k, v in state.statuses.items()},
                "total": sum(state.requests.values()),
                "throttled": state.statuses.get(429, 0),
                "edited_out_of_band": state.edited,
                "tokens": len(state.tokens),
            }
        )

    async def faults(request: Request) -> Response:
        body = await _body(request)
        new = Faults(
            latency_ms=_number(body, "latency_ms", 0, 0, 60_000),
            jitter_ms=_number(body, "jitter_ms", 0, 0, 60_000),
            fail=_fail_rules(body.get("fail")),
            drop=_number(body, "drop", 0, 0, 1),
            slow_body_ms=_number(body, "slow_body_ms", 0, 0, 60_000),
            concurrent_writer=_number(body, "concurrent_writer", 0, 0, 1),
            retry_after_s=_integer(body, "retry_after_s", 1),
        )
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | str)):
            raise ApiProblem(400, "seed must be an integer or a string", "invalid.value", "seed")
        rate = _integer(body, "rate_limit_per_minute", state.config.rate_limit_per_minute, 1)
        state.config.faults = new
        if seed is not None:
            # A seed starts a replay: the same requests from now on meet the same faults.
            state.rng.seed(seed)
            state.fault_seed = str(seed)
            state.attempts.clear()
        state.config.rate_limit_per_minute = rate
        return JSONResponse(asdict(state.config.faults))

    async def arm(request: Request) -> Response:
        targets = _items(await _body(request), "resources")
        for target in targets:
            if not isinstance(target.get("kind"), str) or not isinstance(target.get("id"), str):
                raise ApiProblem(400, "each resource needs a kind and an id", "invalid.value", "resources")
        state.armed.update((t["kind"], t["id"]) for t in targets)
        return JSONResponse({"armed": sorted(f"{k}/{i}" for k, i in state.armed)})

    async def bulk(request: Request) -> Response:
        body = await _body(request, BULK_LIMIT)
        functions, policies, prompts = (_items(body, k) for k in (FUNCTIONS, POLICIES, PROMPTS))
        system = Token("bulk-loader", frozenset(), math.inf)
        # A snapshot may arrive in several batches in any order, so references are not checked.
        unchecked = catalog(state, references=False)
        try:
            with state.store.transaction():
                for item in functions:
                    stored = validation.function_definition(str(item.get("id")), item)
                    stored["version"] = 1
                    stamp(state, stored, FUNCTIONS, stored["id"], system, None)
                    state.store.put(FUNCTIONS, stored["id"], stored["id"], stored)
                for item in policies:
                    stored = validation.context_policy(str(item.get("id")), item, unchecked)
                    stamp(state, stored, POLICIES, stored["id"], system, None)
                    state.store.put(POLICIES, stored["id"], stored["id"], stored)
                for item in prompts:
                    stored = validation.prompt(item, unchecked)
                    stored["id"], stored["revision"] = (
                        str(uuid.UUID(int=state.rng.getrandbits(128), version=4)),
                        1,
                    )
                    stamp(state, stored, PROMPTS, stored["id"], system, None)
                    state.store.put(PROMPTS, stored["id"], stored["name"], stored)
        except validation.Invalid as exc:
            raise ApiProblem(400, exc.message, "invalid.value", exc.field) from None
        return JSONResponse(
            {"created": {FUNCTIONS: len(functions), POLICIES: len(policies), PROMPTS: len(prompts)}}
        )

    async def metrics(request: Request) -> Response:
        # Every prompt named here behaves so from now on; earlier windows keep their numbers.
        changes = _behaviours(await _body(request), state.now())
        state.config.traffic.behaviours.extend(changes)
        return JSONResponse(
            {
                c.prompt: {
                    "successRate": c.success_rate,
                    "latencyMs": c.latency_ms,
                    "tokensPerCall": c.tokens_per_call,
                    **({"variant": c.variant} if c.variant else {}),
                }
                for c in changes
            }
        )

    async def traffic(request: Request) -> Response:
        body = await _body(request)
        unknown = sorted(set(body) - {"callsPerSecond"})
        if unknown:
            raise ApiProblem(400, f"unknown field(s) {unknown}", "invalid.value", unknown[0])
        rate = _number(body, "callsPerSecond", state.config.traffic.calls_per_second, 0, MAX_CALLS_PER_SECOND)
        # A new segment from now on: windows that already ended keep their calls.
        state.config.traffic.rate_changes.append((state.now(), rate))
        return JSONResponse({"callsPerSecond": rate})

    async def clock(request: Request) -> Response:
        if request.method == "POST":
            # Time passes for everything the emulator times (tokens, rate-limit windows,
            # traffic), as if the test had slept; nothing the client times is touched.
            state.clock_offset_s += _advance(await _body(request))
        return JSONResponse({"now": state.now_iso(), "offset_s": state.clock_offset_s})

    def guarded(handler: Admin) -> Admin:
        async def run(request: Request) -> Response:
            try:
                check_admin(state, request)
                response = await handler(request)
            except ApiProblem as problem:
                response = error_response(problem)
            response.headers.update(NO_STORE)
            return response

        return run

    return [
        Route(f"{PREFIX}/reset", guarded(reset), methods=["POST"]),
        Route(f"{PREFIX}/stats", guarded(stats), methods=["GET"]),
        Route(f"{PREFIX}/faults", guarded(faults), methods=["PUT"]),
        Route(f"{PREFIX}/concurrent-writer", guarded(arm), methods=["POST"]),
        Route(f"{PREFIX}/bulk", guarded(bulk), methods=["POST"]),
        Route(f"{PREFIX}/metrics", guarded(metrics), methods=["PUT"]),
        Route(f"{PREFIX}/traffic", guarded(traffic), methods=["PUT"]),
        Route(f"{PREFIX}/clock", guarded(clock), methods=["GET", "POST"]),
    ]
