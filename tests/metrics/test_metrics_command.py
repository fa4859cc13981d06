"""`reconciler metrics` and the emulator's synthetic traffic, over a real loopback socket."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from reconciler.cli import main
from tests.conftest import Org
from tests.metrics.conftest import CALLS_PER_SECOND, HISTORY_S, catch_up, write_gated_project

QUERY = "/api/v2/analytics/conversations/details/query"


def cli(org: Org, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=org.environ(), catch_exceptions=False)
    return result.exit_code, result.output


def raw_records(
    org: Org, prompt_ids: list[str], start: str, end: str, page_size: int = 37
) -> list[dict[str, Any]]:
    """Every record of a window, pages followed by hand (a small page size: several pages)."""
    query = {
        "interval": f"{start}/{end}",
        "view": "ai_llm_gateway",
        "filters": [{"type": "aiPromptId", "values": prompt_ids}],
        "metrics": ["aiLatency", "aiTokensUsed", "aiSuccessRate"],
        "pageSize": page_size,
    }
    out: list[dict[str, Any]] = []
    path = QUERY
    while True:
        response = org.api("POST", path, query)
        assert response.status_code == 200, response.text
        body = response.json()
        out.extend(body["entities"])
        if not body.get("nextPageUri"):
            assert len(out) == body["totalHits"]
            return out
        path = body["nextPageUri"]


def expected(records: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(r["aiLatency"] for r in records)
    return {
        "calls": len(records),
        "successRate": round(sum(r["aiSuccessRate"] for r in records) / len(records), 4),
        "meanLatencyMs": round(sum(latencies) / len(latencies), 1),
        "p95LatencyMs": float(latencies[math.ceil(0.95 * len(latencies)) - 1]),
        "tokensPerCall": round(sum(r["aiTokensUsed"] for r in records) / len(records), 1),
    }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(write_gated_project(tmp_path))
    return tmp_path


def live_prompts(org: Org) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in org.listing("/api/v2/ai/llm/prompts")}


def test_metrics_match_what_the_emulator_generated(busy_org: Org, project: Path) -> None:
    assert cli(busy_org, "apply", "--auto-approve")[0] == 0
    catch_up(busy_org)  # the prompts have HISTORY_S of traffic behind them
    code, out = cli(busy_org, "metrics", "--since", "10s", "--format", "json")
    assert code == 0, out
    report = json.loads(out)
    prompts = live_prompts(busy_org)
    assert [p["name"] for p in report["prompts"]] == ["assistant", "router"]
    start, end = report["window"]["start"], report["window"]["end"]
    for shown in report["prompts"]:
        live = prompts[shown["name"]]
        assert shown["id"] == live["id"]
        records = raw_records(busy_org, [live["id"]], start, end)
        assert {k: shown[k] for k in expected(records)} == expected(records)
        # The emulator's rate: calls from the prompt's creation to the window's end (±1 per variant).
        created = datetime.fromisoformat(live["dateCreated"]).timestamp()
        lived = datetime.fromisoformat(end).timestamp() - max(
            created, datetime.fromisoformat(start).timestamp()
        )
        assert lived >= HISTORY_S
        assert abs(shown["calls"] - CALLS_PER_SECOND * lived) <= 2
        assert 0.9 <= shown["successRate"] <= 1.0
    router = report["prompts"][1]
    by_variant = {v["name"]: v for v in router["variants"]}
    assert set(by_variant) == {"short", "long"}
    assert sum(v["calls"] for v in by_variant.values()) == router["calls"]
    assert abs(by_variant["short"]["calls"] - 0.7 * router["calls"]) <= 2
    for name, shown in by_variant.items():
        records = [
            r
            for r in raw_records(busy_org, [prompts["router"]["id"]], start, end)
            if r["aiPromptVariant"] == name
        ]
        assert {k: shown[k] for k in expected(records)} == expected(records)


def test_a_window_answers_the_same_every_time_and_behaviour_changes_only_from_now_on(
    busy_org: Org, project: Path
) -> None:
    assert cli(busy_org, "apply", "--auto-approve")[0] == 0
    router = live_prompts(busy_org)["router"]["id"]
    # Windows on the emulator's clock, moved 1.5 s at a time (its traffic's timeline).
    before = advance(busy_org, 1.5)
    first = raw_records(busy_org, [router], router_created(busy_org), before)
    assert len(first) >= CALLS_PER_SECOND * 1.5 - 2
    busy_org.admin("PUT", "metrics", {"router": {"successRate": 0.25, "latencyMs": 3000, "variant": "long"}})
    changed = str(busy_org.admin("GET", "clock")["now"])
    after = advance(busy_org, 1.5)
    # The past did not change, and asking again answers the same records.
    assert raw_records(busy_org, [router], router_created(busy_org), before, page_size=1000) == first
    later = raw_records(busy_org, [router], changed, after)
    long_calls = [r for r in later if r["aiPromptVariant"] == "long"]
    short_calls = [r for r in later if r["aiPromptVariant"] == "short"]
    assert expected(long_calls)["successRate"] < 0.4
    assert expected(long_calls)["meanLatencyMs"] > 2500
    assert expected(short_calls)["successRate"] > 0.9
    assert expected(short_calls)["meanLatencyMs"] < 1000


def advance(org: Org, seconds: float) -> str:
    """Let ``seconds`` pass on the emulator's clock; its time afterwards."""
    return str(org.admin("POST", "clock", {"advance_s": seconds})["now"])


def router_created(org: Org) -> str:
    return str(live_prompts(org)["router"]["dateCreated"])


def test_text_report_names_prompts_and_variants(busy_org: Org, project: Path) -> None:
    assert cli(busy_org, "apply", "--auto-approve")[0] == 0
    catch_up(busy_org)
    code, out = cli(busy_org, "metrics", "router", "--since", "5m")
    assert code == 0, out
    assert "router" in out and "short" in out and "long" in out and "assistant" not in out
    code, out = cli(busy_org, "metrics", "nobody")
    assert code == 1 and "no live prompt named 'nobody'" in out


@pytest.mark.parametrize(
    "body",
    [
        {"router": {"successRate": 1.5}},
        {"router": {"latencyMs": "slow"}},
        {"router": {"sucessRate": 0.5}},
        {"router": {"variant": 3}},
        {"router": [0.5]},
        [1, 2],
    ],
)
def test_malformed_behaviour_is_a_400(busy_org: Org, body: Any) -> None:
    response = httpx.put(f"{busy_org.base_url}/__emulator/metrics", json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["status"] == 400


def test_traffic_rate_knob_and_query_checks(busy_org: Org) -> None:
    assert (
        httpx.put(
            f"{busy_org.base_url}/__emulator/traffic", json={"callsPerSecond": -1}, timeout=10
        ).status_code
        == 400
    )
    assert busy_org.admin("PUT", "traffic", {"callsPerSecond": 5}) == {"callsPerSecond": 5}
    no_interval = {"view": "ai_llm_gateway", "filters": [{"type": "aiPromptId", "values": ["x"]}]}
    assert busy_org.api("POST", QUERY, no_interval).status_code == 400
    backwards = {**no_interval, "interval": "2026-11-02T00:00:00Z/2026-11-01T00:00:00Z"}
    assert busy_org.api("POST", QUERY, backwards).status_code == 400


def test_the_markdown_plan_shows_live_traffic_next_to_a_prompt_change(
    busy_org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reviewers see what a prompt change touches: its calls, success and latency right now."""
    monkeypatch.chdir(write_gated_project(tmp_path))
    code, out = cli(busy_org, "apply", "--auto-approve")
    assert code == 0, out
    catch_up(busy_org)  # traffic accrues from the prompt's creation
    manifests = tmp_path / "manifests" / "all.yaml"
    manifests.write_text(manifests.read_text().replace("how can I help?", "what do you need?"))
    code, out = cli(busy_org, "plan", "--format", "markdown")
    assert code == 0, out
    section = out.split("update <b>Prompt/assistant</b>", 1)[1]
    line = next(x for x in section.splitlines() if x.startswith("**Live traffic now:**"))
    calls = int(line.split("**Live traffic now:** ", 1)[1].split(" calls", 1)[0].replace(",", ""))
    assert calls > 0 and "success" in line and "p95 latency" in line and "in the last 1h" in line, line
    assert "Prompt/router" not in out  # unchanged prompts get no section
