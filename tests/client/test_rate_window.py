"""The rate limiter against the service's own window counter, in virtual time.

The service is the emulator's fixed-window counter itself (``reconciler.emulator.faults.rate_headers``:
one 60 s window per token that starts at the first request after the previous one ended, answering
``inin-ratelimit-count/allowed/reset`` and a 429 with ``Retry-After`` over the budget), behind an
httpx MockTransport with random latencies each way, lost responses and many requests in flight.
The requests go through ``HttpSession`` exactly as a run's do. The event loop's clock is virtual:
a sleep (the limiter's, the transport's, the retries' backoff) moves it forward at once when
nothing else can run, so minutes of traffic take a fraction of a second and every run is the same.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import httpx
import pytest

from reconciler.client.http import Credentials, HttpSession, RateLimiter, RetryPolicy
from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.faults import rate_headers
from reconciler.emulator.server import running_emulator
from reconciler.emulator.state import ApiProblem, Token
from tests.conftest import CLIENT_ID, CLIENT_SECRET, Org

T = TypeVar("T")
WINDOW_S = 60.0


class _AdvancingSelector:
    """The loop's selector, except that waiting for ``timeout`` moves the virtual clock instead."""

    def __init__(self, real: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._real, self._loop = real, loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("simulation deadlock: every task waits and no timer is due")
        if timeout > 0:
            self._loop.now += timeout
        return self._real.select(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self._selector = _AdvancingSelector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self.now


def simulate(main: Callable[[VirtualTimeLoop], Coroutine[Any, Any, T]]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


@dataclass
class Service:
    """One token's window on the service, behind a network that delays and sometimes loses."""

    clock: Callable[[], float]
    allowed: int
    rng: random.Random
    latency_s: float = 0.02  # each way, uniform in [0, latency_s]
    lost: float = 0.0  # share of requests whose connection breaks (half before the count, half after)
    window_began: float | None = None  # a window someone else already uses when we start ...
    used_before: int = 0  # ... and how much of it
    throttled: int = 0
    counted: int = 0
    most_in_a_window: dict[float, int] = field(default_factory=dict)
    last_answer: float = 0.0

    def __post_init__(self) -> None:
        config = SimpleNamespace(rate_limit_per_minute=self.allowed)
        self.state = SimpleNamespace(now=self.clock, config=config)
        self.token = Token("sim", frozenset(), math.inf, window_start=-math.inf)
        if self.window_began is not None:
            self.token.window_start, self.token.count = self.window_began, self.used_before
            self.counted = self.used_before

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "sim", "expires_in": 86400})
        await asyncio.sleep(self.rng.uniform(0, self.latency_s))
        if self.rng.random() < self.lost / 2:
            raise httpx.ConnectError("lost on the way to the service")
        status, body = 200, {"entities": []}
        try:
            headers = rate_headers(self.state, self.token)  # type: ignore[arg-type]
        except ApiProblem as problem:
            self.throttled += 1
            status, headers = 429, problem.headers
            body = {"message": problem.message, "code": "too.many.requests", "status": 429}
        self.counted += 1
        start = self.token.window_start
        self.most_in_a_window[start] = max(self.most_in_a_window.get(start, 0), self.token.count)
        cut = self.rng.random() < self.lost / 2
        await asyncio.sleep(self.rng.uniform(0, self.latency_s))
        if cut:
            raise httpx.ReadError("connection lost after the service counted the request")
        self.last_answer = self.clock()
        return httpx.Response(status, headers=headers, json=body)


async def apply_like(session: HttpSession, reads: int, writes: int, parallelism: int) -> None:
    """What an apply sends: a few reads one after another, then the writes ``parallelism`` at a time."""
    for i in range(reads):
        await session.request("GET", f"/api/v2/reads/{i}")
    gate = asyncio.Semaphore(parallelism)

    async def write(i: int) -> None:
        async with gate:
            await session.request("PUT", f"/api/v2/writes/{i}", json={"i": i})

    await asyncio.gather(*(write(i) for i in range(writes)))


def run(
    *,
    seed: int,
    reads: int,
    writes: int,
    parallelism: int,
    allowed: int = 300,
    latency_s: float = 0.02,
    lost: float = 0.0,
    window_began_s_ago: float | None = None,
    used_before: int = 0,
) -> tuple[Service, float, float]:
    """Service, the run's start and its end (virtual seconds)."""

    async def main(loop: VirtualTimeLoop) -> tuple[Service, float, float]:
        began = None if window_began_s_ago is None else loop.time() - window_began_s_ago
        service = Service(loop.time, allowed, random.Random(seed), latency_s, lost, began, used_before)
        async with httpx.AsyncClient(
            base_url="https://api.example", transport=httpx.MockTransport(service.handle)
        ) as http:
            session = HttpSession(
                http,
                Credentials("sim", "secret"),
                limiter=RateLimiter(clock=loop.time),
                retry=RetryPolicy(attempts=8),
                rng=random.Random(seed),
            )
            started = loop.time()
            await apply_like(session, reads, writes, parallelism)
            return service, started, loop.time()

    return simulate(main)


def test_an_apply_spends_the_whole_window_and_never_overruns_it() -> None:
    """The bench's shape: 300 writes at 300/min plus the six reads around them. The budget is
    spent to the end of the window, the five requests left over go when it resets, none is
    counted over the budget, and the whole takes within 5 % of N / rate (60 s)."""
    service, started, ended = run(seed=1, reads=6, writes=300, parallelism=10)
    assert service.throttled == 0
    first, *rest = service.most_in_a_window.values()
    assert first == 300  # the first window's budget spent to the last request
    assert rest == [6]
    assert ended - started <= 1.05 * 60


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("latency_s", "parallelism", "lost"),
    [(0.02, 10, 0.0), (1.0, 10, 0.02), (2.0, 32, 0.05)],
    ids=["fast", "slow-and-lossy", "very-slow-many-in-flight"],
)
def test_a_window_already_in_use_is_finished_then_the_next_ones_filled(
    seed: int, latency_s: float, parallelism: int, lost: float
) -> None:
    """Someone used half the token's window 20 s before the run began; responses take up to
    ``latency_s`` each way, arrive out of order, and some are lost (before or after the service
    counted them, retried). No window is ever counted over its budget, and the run ends within
    5 % of what the budget allows from the moment that window began (all counted requests at the
    allowed rate), plus one last round trip."""
    allowed = 300
    service, started, ended = run(
        seed=seed,
        reads=6,
        writes=900,
        parallelism=parallelism,
        allowed=allowed,
        latency_s=latency_s,
        lost=lost,
        window_began_s_ago=20,
        used_before=150,
    )
    assert service.throttled == 0
    assert max(service.most_in_a_window.values()) <= allowed
    floor = service.counted / (allowed / WINDOW_S)
    assert ended - (started - 20) <= 1.05 * floor + 2 * latency_s


def test_fewer_requests_than_a_window_are_spread_not_sent_at_once() -> None:
    """60 writes at 300/min: paced over about 12 s, not fired in one burst at the start."""
    service, started, ended = run(seed=2, reads=0, writes=60, parallelism=10)
    assert service.throttled == 0
    assert 11.0 <= ended - started <= 12.6


# Edge cases, on the limiter alone: a "request" is acquire, then observe (or release, when no
# headers came back).


def headers(count: int, reset: int, allowed: int = 10) -> dict[str, str]:
    return {
        "inin-ratelimit-count": str(count),
        "inin-ratelimit-allowed": str(allowed),
        "inin-ratelimit-reset": str(reset),
    }


def test_the_first_request_goes_at_once_and_the_next_are_paced_at_the_configured_rate() -> None:
    async def main(loop: VirtualTimeLoop) -> list[float]:
        limiter = RateLimiter(per_minute=60, clock=loop.time)
        t0, starts = loop.time(), []
        for _ in range(4):
            limiter.release(await limiter.acquire())
            starts.append(loop.time() - t0)
        return starts

    assert simulate(main) == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.01)


def test_with_no_answers_requests_keep_to_the_configured_rate() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        limiter = RateLimiter(per_minute=300, clock=loop.time)
        t0 = loop.time()
        for _ in range(101):
            limiter.release(await limiter.acquire())
        return loop.time() - t0

    # 300/min, no window known: one request every 0.2 s, 100 further ones take 20 s.
    assert 19.0 < simulate(main) < 21.0


def test_headers_teach_the_rate_and_pause_when_the_window_is_used() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        limiter = RateLimiter(per_minute=300, clock=loop.time)
        t0 = loop.time()
        limiter.observe(headers(60, 7, allowed=60), await limiter.acquire())
        assert limiter.per_minute == 60
        limiter.release(await limiter.acquire())
        return loop.time() - t0

    assert simulate(main) >= 7.0


def test_a_waiting_request_goes_as_soon_as_an_answer_shows_room() -> None:
    """Before any answer the limiter paces at the configured 300/min, one request every 0.2 s.
    A request waiting its turn goes as soon as the first answer teaches a budget with room in
    it, not at the end of that 0.2 s: every command's first reads go out together (a listing's
    first pages, the models listing), and they waited 0.2 s for nothing."""

    async def main(loop: VirtualTimeLoop) -> float:
        limiter = RateLimiter(clock=loop.time)  # the configured 300/min
        t0 = loop.time()
        first = await limiter.acquire()

        async def answer() -> None:
            await asyncio.sleep(0.02)
            limiter.observe(headers(1, 60, allowed=100_000), first)

        answering = asyncio.ensure_future(answer())
        second = await limiter.acquire()
        started = loop.time() - t0
        limiter.release(second)
        await answering
        return started

    assert simulate(main) == pytest.approx(0.02, abs=0.002)


def test_without_headers_requests_are_released_and_never_more_than_the_budget_in_a_minute() -> None:
    """A service (or proxy) that sends no rate-limit headers at all: responses and lost
    connections alike free what they hold, nothing stalls, and the limiter still never starts more
    than the budget within any minute."""

    async def main(loop: VirtualTimeLoop) -> list[float]:
        limiter = RateLimiter(per_minute=30, clock=loop.time)
        starts: list[float] = []
        gate = asyncio.Semaphore(8)
        rng = random.Random(3)

        async def one() -> None:
            async with gate:
                permit = await limiter.acquire()
                starts.append(loop.time())
                await asyncio.sleep(rng.uniform(0, 5))
                if rng.random() < 0.5:
                    limiter.observe({}, permit)
                else:
                    limiter.release(permit)

        await asyncio.gather(*(one() for _ in range(100)))
        return starts

    starts = simulate(main)
    assert len(starts) == 100
    assert all(sum(1 for t in starts if s <= t < s + WINDOW_S) <= 30 for s in starts)
    # One every 2 s, a little slower: a request stays counted a minute after it ended.
    assert starts[-1] - starts[0] <= 99 * 2.0 * (WINDOW_S + 5) / WINDOW_S


def test_requests_in_flight_count_as_used_until_answers_show_they_were_counted() -> None:
    """Budget 10. Four requests are out; the first answer says 7 counted (6 by someone else):
    the three still in flight may be counted after it, so the window is used up and the next
    request waits, until the three answer with lower counts: they were counted before the 7,
    and there is room again."""

    async def main(loop: VirtualTimeLoop) -> tuple[float, bool, float]:
        limiter = RateLimiter(per_minute=600, clock=loop.time)  # learns 10 from the headers
        t0 = loop.time()
        first, *others = [await limiter.acquire() for _ in range(4)]
        limiter.observe(headers(7, 60), first)
        shown = limiter.paused_for()
        following = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(20 - (loop.time() - t0))
        held = not following.done()
        for permit in others:
            limiter.observe(headers(6, 60), permit)
        await following
        return shown, held, loop.time() - t0

    shown, held, following = simulate(main)
    assert shown == pytest.approx(60.0)
    assert held
    assert 20 <= following <= 20.5


def test_a_lost_response_stays_counted_until_the_window_ends() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        limiter = RateLimiter(per_minute=10, clock=loop.time)
        t0 = loop.time()
        limiter.observe(headers(1, 60), await limiter.acquire())
        for _ in range(9):
            limiter.release(await limiter.acquire())  # connection lost: maybe counted, maybe not
        await limiter.acquire()
        return loop.time() - t0

    assert 60.0 <= simulate(main) <= 61.5


def test_a_new_window_is_taken_from_the_first_answer_after_the_old_one_ended() -> None:
    """The window is used up: everyone waits for its reset (which the progress display shows),
    then the next answer shows a small count and a full reset, and pacing resumes at once."""

    async def main(loop: VirtualTimeLoop) -> tuple[float, float, float, float]:
        limiter = RateLimiter(per_minute=10, clock=loop.time)
        t0 = loop.time()
        limiter.observe(headers(10, 30), await limiter.acquire())  # 10 of 10, 30 s left
        shown = limiter.paused_for()
        permit = await limiter.acquire()
        reset_at = loop.time() - t0
        limiter.observe(headers(1, 60), permit)
        assert limiter.paused_for() == 0
        limiter.observe(headers(2, 60), await limiter.acquire())
        second = loop.time() - t0
        return shown, reset_at, second, limiter.paused_for()

    shown, reset_at, second, paused = simulate(main)
    assert shown == pytest.approx(30.0)
    assert 30.0 <= reset_at <= 30.5
    assert second == pytest.approx(reset_at + 6.0, abs=0.1)  # 10 per minute, spread
    assert paused == 0


def test_a_429_pauses_everyone_for_its_retry_after() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[float, float]:
        limiter = RateLimiter(per_minute=300, clock=loop.time)
        t0 = loop.time()
        limiter.observe(headers(1, 60, allowed=300), await limiter.acquire())
        limiter.pause(12)
        shown = limiter.paused_for()
        await limiter.acquire()
        return shown, loop.time() - t0

    shown, waited = simulate(main)
    assert shown == pytest.approx(12.0)
    assert waited == pytest.approx(12.0)


def test_the_rate_is_relearned_from_allowed() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[float, float, float]:
        limiter = RateLimiter(per_minute=300, clock=loop.time)
        limiter.observe(headers(1, 60, allowed=60), await limiter.acquire())
        learned = limiter.per_minute
        t0 = loop.time()
        for _ in range(5):
            limiter.observe(headers(2, 59, allowed=60), await limiter.acquire())
        slow = loop.time() - t0
        limiter.observe(headers(7, 59, allowed=100_000), await limiter.acquire())
        t1 = loop.time()
        for _ in range(100):
            limiter.observe(headers(8, 59, allowed=100_000), await limiter.acquire())
        return learned, slow, loop.time() - t1

    learned, slow, fast = simulate(main)
    assert learned == 60
    assert 4.0 <= slow <= 5.5  # about one a second
    assert fast < 0.2


def test_against_the_emulator_a_window_someone_else_nearly_used_is_finished_without_a_429() -> None:
    """Over HTTP, against the emulator: someone else with the same token has used 234 of the
    window's 240, and the emulator's clock is moved on so that 3 s of the window are left. Our
    12 requests spend the 6 left, wait for the reset, and go on in the next window: no 429, in a
    few seconds."""
    with running_emulator(EmulatorConfig(db=":memory:", rate_limit_per_minute=240, seed=1)) as url:
        org = Org(url)

        async def main() -> tuple[float, list[int]]:
            async with httpx.AsyncClient(base_url=url) as http:
                session = HttpSession(http, Credentials(CLIENT_ID, CLIENT_SECRET), limiter=RateLimiter(240))
                bearer = {"Authorization": f"Bearer {await session.tokens.token()}"}
                for _ in range(234):
                    (await http.get("/api/v2/ai/llm/models", headers=bearer)).raise_for_status()
                org.admin("POST", "clock", {"advance_s": 57})
                started = time.perf_counter()
                answers = await asyncio.gather(
                    *(session.request("GET", "/api/v2/ai/llm/models") for _ in range(12))
                )
                counts = [int(a.headers["inin-ratelimit-count"]) for a in answers]
                return time.perf_counter() - started, counts

        elapsed, counts = asyncio.run(main())
        assert org.admin("GET", "stats")["throttled"] == 0
    assert max(counts) <= 240
    old, new = [c for c in counts if c > 234], sorted(c for c in counts if c <= 234)
    assert new == list(range(1, len(new) + 1))  # the rest in the next window
    assert len(old) >= 3  # (all 6 when nothing is slow)
    assert 2.0 <= elapsed <= 8.0
