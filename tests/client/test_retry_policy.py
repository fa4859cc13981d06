"""Retries' backoff: capped and jittered. (The rate limiter's tests, in virtual time, are in
test_rate_window.py.)"""

from __future__ import annotations

import random

from reconciler.client.http import RetryPolicy


def test_full_jitter_stays_under_the_cap() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=4.0)
    rng = random.Random(1)
    delays = [policy.delay(attempt, rng) for attempt in range(1, 12) for _ in range(20)]
    assert max(delays) <= 4.0 and min(delays) >= 0.0
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not a fixed ladder
