"""The emulator's one clock: `POST /__emulator/clock {"advance_s": N}` moves forward everything it
times (tokens, rate-limit windows, synthetic traffic, date stamps), so tests let time pass
without sleeping."""

from __future__ import annotations

from datetime import datetime

import httpx

from reconciler.emulator.config import EmulatorConfig, Traffic
from reconciler.emulator.server import running_emulator
from tests.conftest import Org
from tests.emulator.test_http_semantics import FN, PROMPTS, assert_genesys_error, function, prompt

QUERY = "/api/v2/analytics/conversations/details/query"


def instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_advancing_moves_the_clock_forward_and_only_forward(org: Org) -> None:
    before = org.admin("GET", "clock")
    moved = org.admin("POST", "clock", {"advance_s": 86400})
    assert moved["offset_s"] == before["offset_s"] + 86400
    assert 86400 <= instant(moved["now"]) - instant(before["now"]) < 86400 + 5
    refused = httpx.post(f"{org.base_url}/__emulator/clock", json={"advance_s": -86400})
    assert_genesys_error(refused, 400, "invalid.value")
    assert org.admin("GET", "clock")["offset_s"] == 86400  # a refused move changes nothing


def test_writes_are_stamped_on_the_emulator_clock(org: Org) -> None:
    org.admin("POST", "clock", {"advance_s": 10 * 86400})
    now = instant(org.admin("GET", "clock")["now"])
    stored = org.api("PUT", f"{FN}/func-0", function()).json()
    assert abs(instant(stored["dateModified"]) - now) < 5
    assert abs(instant(stored["dateCreated"]) - now) < 5


def test_a_new_rate_limit_window_starts_when_a_minute_has_passed() -> None:
    with running_emulator(EmulatorConfig(rate_limit_per_minute=2)) as url:
        org = Org(url)
        auth = {"Authorization": f"Bearer {org.token()}"}
        assert [httpx.get(f"{url}{FN}", headers=auth).status_code for _ in range(3)] == [200, 200, 429]
        throttled = httpx.get(f"{url}{FN}", headers=auth)
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
        org.admin("POST", "clock", {"advance_s": 60})
        fresh = httpx.get(f"{url}{FN}", headers=auth)
        assert fresh.status_code == 200 and fresh.headers["inin-ratelimit-count"] == "1"


def test_traffic_accrues_as_the_clock_moves() -> None:
    config = EmulatorConfig(rate_limit_per_minute=100_000, traffic=Traffic(calls_per_second=10, seed=3))
    with running_emulator(config) as url:
        org = Org(url)
        created = org.api("POST", PROMPTS, prompt()).json()
        window = {"view": "ai_llm_gateway", "filters": [{"type": "aiPromptId", "values": [created["id"]]}]}

        def calls_until(end: str) -> int:
            query = {**window, "interval": f"{created['dateCreated']}/{end}", "pageSize": 1}
            response = org.api("POST", QUERY, query)
            assert response.status_code == 200, response.text
            return int(response.json()["totalHits"])

        later = org.admin("POST", "clock", {"advance_s": 60})["now"]
        # Ten calls a second from the prompt's creation up to the emulator's now (a minute on).
        assert 600 <= calls_until(later) <= 600 + 10 * 5
        # Past windows keep their calls; the future holds none yet.
        assert calls_until(later) == calls_until(later)
        beyond = datetime.fromtimestamp(instant(later) + 3600).astimezone().isoformat()
        assert calls_until(beyond) - calls_until(later) <= 10
