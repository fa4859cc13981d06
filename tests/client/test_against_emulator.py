"""The HTTP client against the real emulator: auth refresh, 401 retry, 429 with Retry-After,
5xx and lost-response retries, pagination, and the request budget of a 1,000-resource plan."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from reconciler.client.api import GatewayClient
from reconciler.client.connect import Connection, open_client
from reconciler.client.http import Credentials, HttpSession, RateLimiter, RetryPolicy
from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.server import running_emulator
from reconciler.errors import AuthError, ServerError
from reconciler.models import Kind
from tests.conftest import Org

CREDS = Credentials("emulator-client", "emulator-secret")


def connection(url: str) -> Connection:
    return Connection("test", url, url, CREDS, {})


async def listing(url: str, **session: Any) -> tuple[int, HttpSession]:
    async with httpx.AsyncClient(base_url=url) as http:
        s = HttpSession(http, CREDS, **session)
        client = GatewayClient(s)
        return len(await client.list_kind(Kind.FUNCTION_DEFINITION)), s


def fn(i: int) -> dict[str, Any]:
    return {
        "id": f"func-{i:05d}",
        "name": f"f{i}",
        "description": "d",
        "timeoutMillis": 10,
        "parameters": {"type": "object", "properties": {}},
    }


def test_token_is_cached_and_refreshed_after_expiry() -> None:
    """The service expires the token (its clock moves past the lifetime) while the client still
    thinks it fresh: the 401 that follows gets exactly one new token and the request succeeds."""
    with running_emulator(EmulatorConfig(token_lifetime_s=3600, rate_limit_per_minute=100_000)) as url:
        org = Org(url)

        async def run() -> HttpSession:
            async with httpx.AsyncClient(base_url=url) as http:
                s = HttpSession(http, CREDS)
                for _ in range(3):
                    await s.request("GET", "/api/v2/ai/llm/models")
                assert s.tokens.requests == 1  # cached
                org.admin("POST", "clock", {"advance_s": 3601})  # expired on the service's side
                await s.request("GET", "/api/v2/ai/llm/models")
                return s

        session = asyncio.run(run())
        assert session.tokens.requests == 2  # one refresh, after the service's 401
        assert session.stats.requests >= 4
        stats = org.admin("GET", "stats")
        assert stats["statuses"] == {"200": 4, "401": 1}
        assert stats["tokens"] == 1  # the expired one was evicted when it was refused


def test_bad_credentials_are_an_auth_error_naming_no_secret(org: Org) -> None:
    async def run() -> None:
        async with httpx.AsyncClient(base_url=org.base_url) as http:
            await HttpSession(http, Credentials("emulator-client", "wrong-secret")).request(
                "GET", "/api/v2/ai/llm/models"
            )

    with pytest.raises(AuthError) as caught:
        asyncio.run(run())
    assert caught.value.status == 401 and "wrong-secret" not in str(caught.value)


def test_429_waits_for_retry_after_then_succeeds(org: Org) -> None:
    org.admin("POST", "bulk", {"function-definitions": [fn(i) for i in range(3)]})
    org.admin("PUT", "faults", {"fail": {"429": 1.0}, "retry_after_s": 1})

    async def run() -> tuple[float, HttpSession]:
        async with httpx.AsyncClient(base_url=org.base_url) as http:
            s = HttpSession(http, CREDS)
            started = time.perf_counter()
            task = asyncio.ensure_future(GatewayClient(s).list_kind(Kind.FUNCTION_DEFINITION))
            await asyncio.sleep(0.3)
            org.admin("PUT", "faults", {})  # the service recovers while we wait
            assert len(await task) == 3
            return time.perf_counter() - started, s

    elapsed, session = asyncio.run(run())
    assert session.stats.throttled >= 1 and elapsed >= 0.9  # honoured the 1 s Retry-After


def test_5xx_and_lost_responses_are_retried_for_idempotent_requests(org: Org) -> None:
    org.admin("POST", "bulk", {"function-definitions": [fn(i) for i in range(250)]})
    org.admin("PUT", "faults", {"fail": {"503": 0.3, "500": 0.1}, "drop": 0.1, "seed": 9})
    count, session = asyncio.run(
        listing(org.base_url, retry=RetryPolicy(base_s=0.01, cap_s=0.05, attempts=10))
    )
    assert count == 250 and session.stats.retries > 0


def test_5xx_gives_up_after_the_retry_budget(org: Org) -> None:
    org.admin("PUT", "faults", {"fail": {"503": 1.0}})
    with pytest.raises(ServerError) as caught:
        asyncio.run(listing(org.base_url, retry=RetryPolicy(base_s=0.01, cap_s=0.02, attempts=3)))
    assert caught.value.code == "service.unavailable" and caught.value.context_id


def test_a_post_is_not_blindly_retried(org: Org) -> None:
    org.admin("PUT", "faults", {"fail": {"503": 1.0}})

    async def run() -> int:
        async with httpx.AsyncClient(base_url=org.base_url) as http:
            s = HttpSession(http, CREDS)
            with pytest.raises(ServerError):
                await GatewayClient(s).create_prompt({"name": "p"})
            return s.stats.requests

    assert asyncio.run(run()) == 1


def test_plan_of_1000_in_sync_resources_costs_a_listing_per_100(org: Org) -> None:
    org.admin("POST", "bulk", {"function-definitions": [fn(i) for i in range(1000)]})
    before = org.admin("GET", "stats")["total"]

    async def run() -> int:
        async with open_client(connection(org.base_url), parallelism=8) as client:
            return len(await client.live_state())

    assert asyncio.run(run()) == 1000
    requests = org.admin("GET", "stats")["total"] - before
    assert requests <= 10 + 1 + 1  # ceil(1000/100) pages of functions + one page each of the other kinds


def test_one_rate_limiter_is_shared_by_all_requests(org: Org) -> None:
    org.admin("PUT", "faults", {"rate_limit_per_minute": 120})

    async def run() -> float:
        async with httpx.AsyncClient(base_url=org.base_url) as http:
            s = HttpSession(http, CREDS, limiter=RateLimiter(per_minute=120))
            started = time.perf_counter()
            await asyncio.gather(*(s.request("GET", "/api/v2/ai/llm/models") for _ in range(8)))
            return time.perf_counter() - started

    # 120/min is 2 per second, spread: 8 concurrent requests take about 3.5 s, none throttled.
    assert asyncio.run(run()) >= 3.0
    assert org.admin("GET", "stats")["throttled"] == 0


def test_a_token_asks_only_for_the_scopes_the_command_needs(org: Org) -> None:
    """Least privilege: reading commands get read scopes only; apply and rollback add writes."""
    from reconciler.client.api import READ_SCOPES, WRITE_SCOPES

    async def granted(writes: bool) -> frozenset[str]:
        async with open_client(connection(org.base_url), writes=writes) as client:
            await client.live_state()
            return client.session.tokens.granted

    assert asyncio.run(granted(writes=False)) == READ_SCOPES
    assert asyncio.run(granted(writes=True)) == WRITE_SCOPES
    assert not any(scope.endswith(":write") for scope in READ_SCOPES)
    assert "ai:llm:function-definition:write" in WRITE_SCOPES


def test_an_integer_over_64_bits_in_a_live_body_is_read_exactly(org: Org) -> None:
    # Listings are decoded with orjson, which reads an integer over 64 bits as a float: the
    # plan would then show a change that is not there, on every run.
    huge = 2**70 + 1
    body = {
        **fn(1),
        "parameters": {"type": "object", "properties": {"n": {"type": "integer", "maximum": huge}}},
    }
    assert org.api("PUT", "/api/v2/ai/llm/function-definitions/func-00001", body).status_code == 201

    async def read() -> Any:
        async with open_client(connection(org.base_url)) as client:
            listed = await client.live_state()
            got = await client.get(Kind.FUNCTION_DEFINITION, "func-00001")
            assert got is not None
            return [r.spec for r in listed], got[0].spec

    listed, got = asyncio.run(read())
    for spec in (*listed, got):
        bound = spec["parameters"]["properties"]["n"]["maximum"]
        assert bound == huge and isinstance(bound, int)


def test_a_read_response_is_freed_without_the_cyclic_collector() -> None:
    """Commands build with the collector off (cli.options.collections_deferred): a response and
    its body must go as soon as nobody holds them, or a listing's pages would all stay."""
    import gc
    import weakref

    with running_emulator(EmulatorConfig(rate_limit_per_minute=100_000)) as url:

        async def run() -> tuple[weakref.ref[httpx.Response], int]:
            async with httpx.AsyncClient(base_url=url) as http:
                s = HttpSession(http, CREDS)
                response = await s.request("GET", "/api/v2/ai/llm/models")
                size = len(response.json()["entities"])
                gone = weakref.ref(response)
                del response
                return gone, size

        gc.disable()
        try:
            gone, size = asyncio.run(run())
            assert size > 0 and gone() is None
        finally:
            gc.enable()
