"""The shared rate limiter, driven by a fake clock (no real waiting); more in test_rate_window.py."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.client.http import RateLimiter, RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_sleep(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return clock


def test_bucket_holds_requests_to_the_rate(fake_sleep: FakeClock) -> None:
    limiter = RateLimiter(per_minute=300, clock=fake_sleep)

    async def take(n: int) -> None:
        for _ in range(n):
            limiter.release(await limiter.acquire())

    asyncio.run(take(101))
    # 300/min, no window known: one request every 0.2 s, 100 further ones take 20 s.
    assert 19.0 < fake_sleep.now < 21.0


def test_headers_teach_the_rate_and_pause_when_the_window_is_used(fake_sleep: FakeClock) -> None:
    limiter = RateLimiter(per_minute=300, clock=fake_sleep)

    async def answered_then_next() -> None:
        limiter.observe(
            {"inin-ratelimit-allowed": "60", "inin-ratelimit-count": "60", "inin-ratelimit-reset": "7"},
            await limiter.acquire(),
        )
        assert limiter.per_minute == 60
        await limiter.acquire()

    asyncio.run(answered_then_next())
    assert fake_sleep.now >= 7.0


def test_full_jitter_stays_under_the_cap() -> None:
    import random

    policy = RetryPolicy(base_s=0.5, cap_s=4.0)
    rng = random.Random(1)
    delays = [policy.delay(attempt, rng) for attempt in range(1, 12) for _ in range(20)]
    assert max(delays) <= 4.0 and min(delays) >= 0.0
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not a fixed ladder
