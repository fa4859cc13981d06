"""The pure part: durations, aggregation and the gate's limits (reconciler.metrics)."""

from __future__ import annotations

import pytest

from reconciler.metrics import (
    Call,
    Stats,
    Verdict,
    judge_one,
    parse_duration,
    percentile,
    prompt_metrics,
    stats_of,
)
from reconciler.models import PromptHealthGate


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600), ("1h30m", 5400), ("2.5s", 2.5), ("90s", 90)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "5d", "-1s"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_nearest_rank_p95_is_an_observed_value() -> None:
    assert percentile([float(v) for v in range(1, 101)], 0.95) == 95.0
    assert percentile([3.0, 1.0, 2.0], 0.95) == 3.0


def test_variants_are_aggregated_apart_and_together() -> None:
    calls = [Call("p", "a", 100, 10, 1.0)] * 3 + [Call("p", "b", 300, 30, 0.0)] + [Call("q", "", 1, 1, 1.0)]
    found = prompt_metrics("prompt", "p", calls)
    assert found.overall.calls == 4 and found.overall.success_rate == 0.75
    assert found.variants["a"].mean_latency_ms == 100 and found.variants["b"].tokens_per_call == 30


def stats(calls: int, success: float, p95: float, tokens: float) -> Stats:
    return Stats(calls, success, p95 * 0.8, p95, tokens)


def test_default_limits_are_relative_to_the_baseline() -> None:
    baseline = stats(200, 0.97, 1000, 1500)
    assert judge_one("p", "", stats(200, 0.95, 1400, 2000), baseline, None).verdict is Verdict.HEALTHY
    worse = judge_one("p", "", stats(200, 0.96, 1600, 1500), baseline, None)
    assert worse.verdict is Verdict.BREACHED
    assert [c.metric for c in worse.checks if c.breached] == ["p95LatencyMs"]


def test_declared_limits_replace_the_default_for_their_metric_only() -> None:
    declared = PromptHealthGate(min_success_rate=0.5)
    judged = judge_one("p", "", stats(200, 0.6, 1000, 1500), stats(200, 0.97, 1000, 1500), declared)
    assert judged.verdict is Verdict.HEALTHY
    assert {c.metric: c.source for c in judged.checks} == {
        "successRate": "declared",
        "p95LatencyMs": "baseline",
        "tokensPerCall": "baseline",
    }


def test_too_little_traffic_or_nothing_to_compare_with_is_inconclusive() -> None:
    assert judge_one("p", "", stats(5, 0.0, 9999, 1), stats(200, 0.97, 1000, 1), None).verdict is (
        Verdict.INCONCLUSIVE
    )
    new_prompt = judge_one("p", "", stats(200, 0.97, 1000, 1), stats_of([]), None)
    assert new_prompt.verdict is Verdict.INCONCLUSIVE and "no baseline" in new_prompt.reason
