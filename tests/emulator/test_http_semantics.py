"""The emulator over a real loopback socket: every status code API.md names, ETag semantics,
the atomic-write race, pagination edges, rate limiting and each fault switch."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.server import running_emulator
from tests.conftest import Org

FN = "/api/v2/ai/llm/function-definitions"
PROMPTS = "/api/v2/ai/llm/prompts"
POLICIES = "/api/v2/ai/llm/context-policies"


def function(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"func-{i}",
        "name": f"f{i}",
        "description": "d",
        "timeoutMillis": 1000,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        **extra,
    }


def prompt(name: str = "p", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1.0.0",
        "template": "Hi {{ who }}",
        "modelId": "genesys-llm-v4",
        "maxTokens": 100,
        "variables": [{"name": "who", "type": "string", "required": True}],
        **extra,
    }


def assert_genesys_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["status"] == status
    assert body["contextId"] and response.headers["ININ-Correlation-Id"] == body["contextId"]
    assert {"message", "messageWithParams", "messageParams", "details", "errors"} <= set(body)


def test_create_read_update_delete_with_etags(org: Org) -> None:
    created = org.api("PUT", f"{FN}/func-0", function())
    assert created.status_code == 201
    etag = created.headers["ETag"]
    assert etag.startswith('"') and created.json()["etag"] == etag
    assert created.json()["version"] == 1
    assert created.json()["parameters"]["properties"]["q"]["maxLength"] == 255  # server default
    assert org.api("GET", f"{FN}/func-0", headers={"If-None-Match": etag}).status_code == 304
    assert org.api("GET", f"{FN}/func-0").headers["ETag"] == etag  # reads never change it
    assert_genesys_error(org.api("PUT", f"{FN}/func-0", function()), 428, "precondition.required")
    assert_genesys_error(
        org.api("PUT", f"{FN}/func-0", function(), {"If-Match": '"stale"'}), 412, "precondition.failed"
    )
    assert_genesys_error(
        org.api("PUT", f"{FN}/func-0", function(), {"If-None-Match": "*"}), 412, "precondition.failed"
    )
    updated = org.api("PUT", f"{FN}/func-0", function(description="e"), {"If-Match": etag})
    assert updated.status_code == 200 and updated.headers["ETag"] != etag and updated.json()["version"] == 2
    assert_genesys_error(
        org.api("DELETE", f"{FN}/func-0", headers={"If-Match": etag}), 412, "precondition.failed"
    )
    assert org.api("DELETE", f"{FN}/func-0", headers={"If-Match": updated.headers["ETag"]}).status_code == 204
    assert_genesys_error(org.api("GET", f"{FN}/func-0"), 404, "not.found")


def test_validation_names_the_field(org: Org) -> None:
    bad = function(timeoutMillis=0)
    response = org.api("PUT", f"{FN}/func-0", bad)
    assert_genesys_error(response, 400, "invalid.value")
    assert response.json()["details"][0]["fieldName"] == "timeoutMillis"
    too_many = function(
        parameters={"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(11)}}
    )
    assert (
        org.api("PUT", f"{FN}/func-0", too_many).json()["details"][0]["fieldName"] == "parameters.properties"
    )
    deep = {
        "type": "object",
        "properties": {
            "a": {
                "type": "object",
                "properties": {
                    "b": {"type": "object", "properties": {"c": {"type": "object", "properties": {}}}}
                },
            }
        },
    }
    assert org.api("PUT", f"{FN}/func-0", function(parameters=deep)).status_code == 400
    assert org.api("PUT", f"{FN}/Bad_Id", function()).json()["details"][0]["fieldName"] == "id"
    undeclared = prompt(template="Hi {{ who }} {{ missing }}")
    assert org.api("POST", PROMPTS, undeclared).json()["details"][0]["fieldName"] == "template"
    over_budget = prompt(
        contextRules=[{"source": "external_api", "maxTokens": 99, "injectionPoint": "system"}]
    )
    assert org.api("POST", PROMPTS, over_budget).status_code == 400
    policy = {"id": "pol", "model_id": "openai-gpt-4o-mini", "token_limit_matrix": {"hard_limit": 20000}}
    assert (
        org.api("PUT", f"{POLICIES}/pol", policy).json()["details"][0]["fieldName"]
        == "token_limit_matrix.hard_limit"
    )
    unknown = function(1, typo_field=1)
    stored = org.api("PUT", f"{FN}/func-1", unknown)
    assert stored.status_code == 201 and "typo_field" not in stored.json()  # ignored, not stored


def test_prompts_unique_names_revisions_and_history(org: Org) -> None:
    first = org.api("POST", PROMPTS, prompt("greeter"))
    assert first.status_code == 201 and first.json()["revision"] == 1
    assert_genesys_error(org.api("POST", PROMPTS, prompt("greeter")), 409, "conflict")
    pid, etag = first.json()["id"], first.headers["ETag"]
    second = org.api(
        "PUT", f"{PROMPTS}/{pid}", prompt("greeter", template="Hello {{ who }}"), {"If-Match": etag}
    )
    assert second.json()["revision"] == 2
    history = org.api("GET", f"{PROMPTS}/{pid}/versions").json()
    assert [v["revision"] for v in history["entities"]] == [1]
    assert history["entities"][0]["template"] == "Hi {{ who }}"
    found = org.api("GET", f"{PROMPTS}?name=greeter").json()
    assert [e["id"] for e in found["entities"]] == [pid]


def test_auth_errors_and_scopes() -> None:
    clients = {"reader": ("reader-secret", frozenset({"ai:llm:function-definition:read"}))}
    with running_emulator(EmulatorConfig(clients=clients, token_lifetime_s=60)) as url:
        bad = httpx.post(
            f"{url}/oauth/token", data={"grant_type": "client_credentials"}, auth=("reader", "nope")
        )
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
        token = httpx.post(
            f"{url}/oauth/token", data={"grant_type": "client_credentials"}, auth=("reader", "reader-secret")
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}{FN}", headers=auth).status_code == 200
        assert_genesys_error(
            httpx.put(f"{url}{FN}/func-0", json=function(), headers=auth), 403, "missing.permissions"
        )
        assert_genesys_error(httpx.get(f"{url}{FN}"), 401, "authentication.required")
        assert httpx.get(f"{url}{FN}", headers=auth).status_code == 200
        Org(url).admin("POST", "clock", {"advance_s": 60})  # the token's whole lifetime passes
        assert_genesys_error(httpx.get(f"{url}{FN}", headers=auth), 401, "bad.credentials")  # expired


def test_body_limits_media_type_and_unknown_routes(org: Org) -> None:
    token = org.token()
    auth = {"Authorization": f"Bearer {token}"}
    huge = json.dumps(function(description="x" * (1024 * 1024 + 10)))
    assert_genesys_error(
        httpx.put(
            f"{org.base_url}{FN}/func-0", content=huge, headers={**auth, "Content-Type": "application/json"}
        ),
        413,
        "request.entity.too.large",
    )
    assert_genesys_error(
        httpx.put(
            f"{org.base_url}{FN}/func-0", content="a=b", headers={**auth, "Content-Type": "text/plain"}
        ),
        415,
        "unsupported.media.type",
    )
    assert_genesys_error(httpx.get(f"{org.base_url}/api/v2/nothing", headers=auth), 404, "not.found")
    assert httpx.post(f"{org.base_url}{FN}", headers=auth).json()["status"] == 405


@pytest.mark.parametrize("count", [0, 1, 100, 101, 250])
def test_pagination_edges(org: Org, count: int) -> None:
    org.admin("POST", "bulk", {"function-definitions": [function(i) for i in range(count)]})
    seen, page, pages = [], 1, 0
    while True:
        body = org.api("GET", f"{FN}?pageSize=100&pageNumber={page}").json()
        pages += 1
        seen += [e["id"] for e in body["entities"]]
        assert body["total"] == count and body["pageCount"] == -(-count // 100)
        assert all("etag" in e for e in body["entities"])
        if "nextUri" not in body:
            break
        assert body["nextUri"].endswith(f"pageNumber={page + 1}")
        page += 1
    assert len(seen) == len(set(seen)) == count
    assert pages == max(1, -(-count // 100))
    assert_genesys_error(org.api("GET", f"{FN}?pageSize=101"), 400, "invalid.value")


def test_concurrent_puts_with_the_same_if_match_one_wins(org: Org) -> None:
    etag = org.api("PUT", f"{FN}/func-0", function()).headers["ETag"]
    token = org.token()

    async def race() -> list[int]:
        async with httpx.AsyncClient(
            base_url=org.base_url, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            calls = [
                http.put(f"{FN}/func-0", json=function(description=f"writer {i}"), headers={"If-Match": etag})
                for i in range(8)
            ]
            return sorted(r.status_code for r in await asyncio.gather(*calls))

    for _ in range(5):
        etag = org.api("GET", f"{FN}/func-0").headers["ETag"]
        assert asyncio.run(race()) == [200] + [412] * 7


def test_rate_limit_headers_and_429() -> None:
    with running_emulator(EmulatorConfig(rate_limit_per_minute=5)) as url:
        org = Org(url)
        token = org.token()
        responses = [httpx.get(f"{url}{FN}", headers={"Authorization": f"Bearer {token}"}) for _ in range(6)]
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        assert responses[0].headers["inin-ratelimit-allowed"] == "5"
        assert responses[4].headers["inin-ratelimit-count"] == "5"
        assert_genesys_error(responses[5], 429, "too.many.requests")
        assert int(responses[5].headers["Retry-After"]) >= 1
        assert "Retry the request in [" in responses[5].json()["message"]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_injected_failures(org: Org, status: int) -> None:
    org.admin("PUT", "faults", {"fail": {str(status): 1.0}})
    response = org.api("GET", FN)
    assert_genesys_error(
        response,
        status,
        {
            429: "too.many.requests",
            500: "internal.server.error",
            502: "bad.gateway",
            503: "service.unavailable",
            504: "request.timeout",
        }[status],
    )


def test_latency_slow_body_and_dropped_connections(org: Org) -> None:
    org.admin("PUT", "faults", {"latency_ms": 150})
    started = time.perf_counter()
    org.api("GET", FN)
    assert time.perf_counter() - started >= 0.15
    org.admin("PUT", "faults", {"slow_body_ms": 300})
    started = time.perf_counter()
    assert org.api("GET", FN).status_code == 200
    assert time.perf_counter() - started >= 0.3
    org.admin("PUT", "faults", {"drop": 1.0})
    token = org.token()
    with pytest.raises(httpx.TransportError):
        httpx.put(
            f"{org.base_url}{FN}/func-9", json=function(9), headers={"Authorization": f"Bearer {token}"}
        )
    org.admin("PUT", "faults", {})
    assert org.api("GET", f"{FN}/func-9").status_code == 200  # processed, only the answer was lost


def test_concurrent_writer_and_seeded_faults(org: Org) -> None:
    etag = org.api("PUT", f"{FN}/func-0", function()).headers["ETag"]
    org.admin("POST", "concurrent-writer", {"resources": [{"kind": "function-definitions", "id": "func-0"}]})
    assert org.api("PUT", f"{FN}/func-0", function(description="mine"), {"If-Match": etag}).status_code == 412
    live = org.api("GET", f"{FN}/func-0").json()
    assert live["labels"]["edited-out-of-band"] == "true" and live["modifiedBy"] == "someone-else"
    assert org.admin("GET", "stats")["edited_out_of_band"] == [
        {"kind": "function-definitions", "id": "func-0"}
    ]

    def pattern() -> list[int]:
        org.admin("PUT", "faults", {"fail": {"503": 0.5}, "seed": 42})
        token = org.token()
        return [
            httpx.get(f"{org.base_url}{FN}", headers={"Authorization": f"Bearer {token}"}).status_code
            for _ in range(20)
        ]

    first, second = pattern(), pattern()
    assert first == second and 503 in first and 200 in first


def test_seeded_faults_do_not_depend_on_the_order_requests_arrive(org: Org) -> None:
    """Each request's faults are drawn from its own identity (method, target, how many came before
    it), so a run replays the same faults however concurrent requests interleave (issue 20)."""
    token = org.token()
    paths = [f"{FN}/func-{i}" for i in range(40)]

    def statuses(order: list[str], threads: int) -> dict[str, list[int]]:
        org.admin("PUT", "faults", {"fail": {"503": 0.3}, "drop": 0.2, "seed": 7})
        seen: dict[str, list[int]] = {p: [] for p in paths}

        def twice(path: str) -> None:
            for _ in range(2):  # the second attempt at the same target draws afresh
                try:
                    answer = httpx.get(f"{org.base_url}{path}", headers={"Authorization": f"Bearer {token}"})
                    seen[path].append(answer.status_code)
                except httpx.TransportError:
                    seen[path].append(0)  # dropped

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(twice, order))
        return seen

    forwards = statuses(paths, 1)
    assert forwards == statuses(list(reversed(paths)), 1) == statuses(paths, 8)
    outcomes = {s for pair in forwards.values() for s in pair}
    assert {0, 404, 503} <= outcomes, outcomes
    assert any(a != b for a, b in forwards.values())  # attempts differ: not one draw per target


def test_state_survives_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "org.db")
    with running_emulator(EmulatorConfig(db=db)) as url:
        etag = Org(url).api("PUT", f"{FN}/func-0", function()).headers["ETag"]
    with running_emulator(EmulatorConfig(db=db)) as url:
        assert Org(url).api("GET", f"{FN}/func-0").headers["ETag"] == etag


def test_read_only_context_endpoints(org: Org) -> None:
    models = org.api("GET", "/api/v2/ai/llm/models").json()["entities"]
    assert {m["model_id"] for m in models} >= {"genesys-llm-v4", "openai-gpt-4-turbo"}
    assert org.api("GET", "/api/v2/ai/llm/models/genesys-llm-v4/capacity").json()["max_tokens"] == 32768
    flow = org.api("GET", "/api/v2/flows/flow-billing-intake").json()
    assert {d["name"]: d["dataType"] for d in flow["inputDefinitions"]}["isVip"] == "boolean"
    conversation = org.api("GET", "/api/v2/conversations/conv-1001").json()
    assert conversation["routing"]["queue"]["name"] == "Billing"
    query = {
        "dateFrom": "2026-11-01",
        "dateTo": "2026-11-20",
        "view": "ai_llm_gateway",
        "filters": [{"type": "aiPromptId", "values": ["p1"]}],
        "metrics": ["aiLatency"],
    }
    assert (
        org.api("POST", "/api/v2/analytics/conversations/details/query", query).json()["entities"][0][
            "aiPromptId"
        ]
        == "p1"
    )
