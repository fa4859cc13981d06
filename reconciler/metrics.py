"""Prompt metrics and the health verdict, computed from conversation detail records (pure).

Input is what the analytics query returns, one record per conversation: ``aiPromptId``,
``aiPromptVariant`` (absent for a prompt without variants), ``aiLatency`` (ms), ``aiTokensUsed``
and ``aiSuccessRate`` (1 or 0 for one call; an aggregate record carries a fraction and counts
as one call). Output is, per prompt and per variant: calls, success rate, mean and p95 latency,
tokens per call; and, for the health gate, a verdict per prompt with the limits it was held to.

The gate's limits, per metric (a limit a prompt declares in ``spec.healthGate`` replaces the
default for that metric only):

    success rate    >= baseline - max(5 points, 3 standard errors of the difference)
    p95 latency     <= baseline p95 x 1.5
    tokens per call <= baseline tokens per call x 1.5

The baseline is the same prompt (the same variant when the baseline has enough of its calls,
else the whole prompt) over a window as long as the watch, just before the apply. Fewer than
``MIN_CALLS`` calls in the watched window, or no limit at all for any metric (a new prompt that
declares none), is INCONCLUSIVE: ``--on-inconclusive`` decides. Variants with too few calls are
not judged on their own; the prompt as a whole still is.

Nothing here does I/O or reads a clock: the gate (``reconciler.health``) and the ``metrics``
command fetch records and pass them in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler.models import DURATION_PATTERN, PromptHealthGate

MIN_CALLS = 20
SUCCESS_RATE_MARGIN = 0.05
SUCCESS_RATE_STDERRS = 3.0
LATENCY_FACTOR = 1.5
TOKENS_FACTOR = 1.5
WHOLE_PROMPT = ""  # the variant name under which a prompt's overall numbers are kept

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``10m``, ``1h30m`` or ``2.5s``; ValueError if not one."""
    cleaned = text.strip().lower()
    if not re.fullmatch(DURATION_PATTERN, cleaned):
        raise ValueError(f"{text!r} is not a duration (e.g. 30s, 10m, 1h30m)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, _, u in re.findall(r"([0-9]+(\.[0-9]+)?)(h|m|s)", cleaned))


def format_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 60 == 0:
        hours, minutes = divmod(int(seconds) // 60, 60)
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds) // 60}m"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Call:
    """One conversation detail record."""

    prompt_id: str
    variant: str
    latency_ms: float
    tokens: float
    success: float  # 1.0 or 0.0 for one call; a fraction for an aggregate record


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def calls_from_records(records: Iterable[Mapping[str, Any]]) -> list[Call]:
    """The records the analytics query returned as calls; records without a prompt id are skipped
    (the service's body is untrusted: a malformed record must not break a gate)."""
    calls = []
    for record in records:
        prompt_id = record.get("aiPromptId")
        if not isinstance(prompt_id, str) or not prompt_id:
            continue
        latency, tokens, success = (
            _number(record.get(k)) for k in ("aiLatency", "aiTokensUsed", "aiSuccessRate")
        )
        calls.append(
            Call(
                prompt_id,
                str(record.get("aiPromptVariant") or WHOLE_PROMPT),
                latency if latency is not None else math.nan,
                tokens if tokens is not None else math.nan,
                min(1.0, max(0.0, success)) if success is not None else math.nan,
            )
        )
    return calls


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1): a value that was actually observed."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class Stats:
    """One prompt's (or variant's) numbers over a window; None where there were no calls."""

    calls: int
    success_rate: float | None
    mean_latency_ms: float | None
    p95_latency_ms: float | None
    tokens_per_call: float | None

    def as_dict(self) -> dict[str, Any]:
        def rounded(value: float | None, digits: int) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "calls": self.calls,
            "successRate": rounded(self.success_rate, 4),
            "meanLatencyMs": rounded(self.mean_latency_ms, 1),
            "p95LatencyMs": rounded(self.p95_latency_ms, 1),
            "tokensPerCall": rounded(self.tokens_per_call, 1),
        }


def stats_of(calls: Sequence[Call]) -> Stats:
    latencies = [c.latency_ms for c in calls if not math.isnan(c.latency_ms)]
    tokens = [c.tokens for c in calls if not math.isnan(c.tokens)]
    successes = [c.success for c in calls if not math.isnan(c.success)]
    return Stats(
        calls=len(calls),
        success_rate=_mean(successes),
        mean_latency_ms=_mean(latencies),
        p95_latency_ms=percentile(latencies, 0.95) if latencies else None,
        tokens_per_call=_mean(tokens),
    )


@dataclass(frozen=True)
class PromptMetrics:
    """A prompt's numbers over one window: as a whole and per variant."""

    name: str
    prompt_id: str
    overall: Stats
    variants: Mapping[str, Stats] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.prompt_id,
            **self.overall.as_dict(),
            "variants": [{"name": v, **s.as_dict()} for v, s in sorted(self.variants.items())],
        }


def traffic_line(found: PromptMetrics, window: str) -> str:
    """One line for a reviewer: how the prompt a plan changes is doing in traffic right now."""
    s = found.overall
    if not s.calls:
        return f"no calls in the last {window}"

    def shown(value: float | None, unit: str) -> str:
        return "-" if value is None else f"{value:.1%}" if unit == "%" else f"{value:,.0f}{unit}"

    return (
        f"{s.calls:,} calls in the last {window}: success {shown(s.success_rate, '%')}, "
        f"p95 latency {shown(s.p95_latency_ms, ' ms')}, {shown(s.tokens_per_call, '')} tokens per call"
    )


def prompt_metrics(name: str, prompt_id: str, calls: Iterable[Call]) -> PromptMetrics:
    """Aggregate the calls of one prompt (calls of other prompts are ignored)."""
    mine = [c for c in calls if c.prompt_id == prompt_id]
    by_variant: dict[str, list[Call]] = {}
    for call in mine:
        if call.variant != WHOLE_PROMPT:
            by_variant.setdefault(call.variant, []).append(call)
    return PromptMetrics(name, prompt_id, stats_of(mine), {v: stats_of(c) for v, c in by_variant.items()})


# --- the health verdict ----------------------------------------------------------------------


class Verdict(StrEnum):
    HEALTHY = "healthy"
    BREACHED = "breached"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Check:
    """One metric held to one limit. ``source`` says where the limit came from."""

    metric: str  # successRate | p95LatencyMs | tokensPerCall
    observed: float
    limit: float
    source: str  # "declared" (spec.healthGate) or "baseline"
    breached: bool

    def describe(self) -> str:
        relation = ">=" if self.metric == "successRate" else "<="
        return (
            f"{self.metric} {_show(self.metric, self.observed)} "
            f"({'breaches' if self.breached else 'within'} {relation} {_show(self.metric, self.limit)}, "
            f"{self.source})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "observed": round(self.observed, 4),
            "limit": round(self.limit, 4),
            "source": self.source,
            "breached": self.breached,
        }


def _show(metric: str, value: float) -> str:
    return f"{value:.1%}" if metric == "successRate" else f"{value:.0f}"


@dataclass(frozen=True)
class Judgement:
    """The verdict on one prompt, or on one variant of it (``variant`` "" = the whole prompt)."""

    prompt: str
    variant: str
    verdict: Verdict
    watched: Stats
    baseline: Stats
    checks: tuple[Check, ...] = ()
    reason: str = ""

    @property
    def subject(self) -> str:
        return f"{self.prompt} (variant {self.variant})" if self.variant else self.prompt

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "variant": self.variant or None,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "watched": self.watched.as_dict(),
            "baseline": self.baseline.as_dict(),
            "checks": [c.as_dict() for c in self.checks],
        }


def _limits(
    watched: Stats, baseline: Stats, declared: PromptHealthGate | None, min_calls: int
) -> list[tuple[str, float | None, float, str]]:
    """(metric, observed, limit, source) for every metric that has a limit."""
    known = baseline.calls >= min_calls
    out: list[tuple[str, float | None, float, str]] = []
    if declared is not None and declared.min_success_rate is not None:
        out.append(("successRate", watched.success_rate, float(declared.min_success_rate), "declared"))
    elif known and baseline.success_rate is not None:
        p = baseline.success_rate
        spread = math.sqrt(max(p * (1 - p), 0.0) * (1 / baseline.calls + 1 / max(watched.calls, 1)))
        margin = max(SUCCESS_RATE_MARGIN, SUCCESS_RATE_STDERRS * spread)
        out.append(("successRate", watched.success_rate, max(0.0, p - margin), "baseline"))
    if declared is not None and declared.max_latency_ms is not None:
        out.append(("p95LatencyMs", watched.p95_latency_ms, float(declared.max_latency_ms), "declared"))
    elif known and baseline.p95_latency_ms is not None:
        out.append(
            ("p95LatencyMs", watched.p95_latency_ms, baseline.p95_latency_ms * LATENCY_FACTOR, "baseline")
        )
    if declared is not None and declared.max_tokens_per_call is not None:
        out.append(
            ("tokensPerCall", watched.tokens_per_call, float(declared.max_tokens_per_call), "declared")
        )
    elif known and baseline.tokens_per_call is not None:
        out.append(
            ("tokensPerCall", watched.tokens_per_call, baseline.tokens_per_call * TOKENS_FACTOR, "baseline")
        )
    return out


def judge_one(
    prompt: str,
    variant: str,
    watched: Stats,
    baseline: Stats,
    declared: PromptHealthGate | None,
    min_calls: int = MIN_CALLS,
) -> Judgement:
    if watched.calls < min_calls:
        reason = f"too little traffic: {watched.calls} call(s) in the window, {min_calls} needed"
        return Judgement(prompt, variant, Verdict.INCONCLUSIVE, watched, baseline, (), reason)
    checks = []
    for metric, observed, limit, source in _limits(watched, baseline, declared, min_calls):
        if observed is None:
            continue
        worse = observed < limit if metric == "successRate" else observed > limit
        checks.append(Check(metric, observed, limit, source, worse))
    if not checks:
        reason = f"no baseline ({baseline.calls} call(s) before the apply) and no declared spec.healthGate"
        return Judgement(prompt, variant, Verdict.INCONCLUSIVE, watched, baseline, (), reason)
    breached = [c for c in checks if c.breached]
    verdict = Verdict.BREACHED if breached else Verdict.HEALTHY
    reason = "; ".join(c.describe() for c in (breached or checks))
    return Judgement(prompt, variant, verdict, watched, baseline, tuple(checks), reason)


def judge(
    watched: PromptMetrics,
    baseline: PromptMetrics,
    declared: PromptHealthGate | None,
    min_calls: int = MIN_CALLS,
) -> list[Judgement]:
    """The whole prompt first, then each variant with enough calls of its own."""
    judgements = [
        judge_one(watched.name, WHOLE_PROMPT, watched.overall, baseline.overall, declared, min_calls)
    ]
    for variant, stats in sorted(watched.variants.items()):
        if stats.calls < min_calls:
            continue
        earlier = baseline.variants.get(variant)
        reference = earlier if earlier is not None and earlier.calls >= min_calls else baseline.overall
        judgements.append(judge_one(watched.name, variant, stats, reference, declared, min_calls))
    return judgements


def overall_verdict(judgements: Sequence[Judgement]) -> Verdict:
    """Breached if anything breached; else inconclusive if any prompt as a whole was; else healthy."""
    if any(j.verdict is Verdict.BREACHED for j in judgements):
        return Verdict.BREACHED
    if any(j.verdict is Verdict.INCONCLUSIVE for j in judgements):
        return Verdict.INCONCLUSIVE
    return Verdict.HEALTHY
