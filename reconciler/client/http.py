"""The HTTP layer every request of a run goes through: auth, one rate limiter, retries, errors.

What lives here is kind-agnostic: OAuth client credentials with a cached token (refreshed before
expiry and once on a 401), ONE rate limiter shared by all requests of a run that spends the
budget of the window the service reports in its ``inin-ratelimit-*`` headers without overrunning
it and obeys ``Retry-After``, capped exponential backoff with full jitter, and the mapping of error
responses to the typed exceptions in ``reconciler.errors``.

What must not live here: anything about a particular kind (that is ``reconciler.kinds``) or about what a
write means (that is ``apply``). Non-idempotent requests (POST) are never retried after the
request may have reached the service; the caller decides, because only it can look up whether a
lost create landed.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from reconciler.errors import (
    ApiError,
    ApiErrorInfo,
    AuthError,
    ConflictError,
    NotFoundError,
    PreconditionRequiredError,
    RateLimitedError,
    ServerError,
    TransportError,
)

DEFAULT_RATE_PER_MINUTE = 300
# The service counts each token's requests in fixed windows of one minute.
WINDOW_S = 60.0
# Pacing may catch up on budget left unused earlier in a window, but never faster than this many
# times the window's average rate.
CATCH_UP = 2.0
# A request waiting on something only a response can change (a request still in flight) looks again
# this often, if no answer or release came sooner (each of those wakes it at once).
POLL_S = 0.25
# A request may start this much before its turn in the pacing schedule (the schedule itself
# keeps the average): at high rates a few requests go together instead of each sleeping 1 ms.
PACE_SLACK_S = 0.005
# An answer that took this long cannot be placed in a window (its headers teach nothing): any
# two answers quicker than this whose windows' possible ends overlap are from the same window.
VAGUE_S = WINDOW_S / 2 - 1
# Refresh a token this long before the service says it expires.
TOKEN_REFRESH_MARGIN_S = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter (AWS architecture blog's "Full Jitter")."""

    attempts: int = 6
    throttled_attempts: int = 30
    base_s: float = 0.2
    cap_s: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap_s, self.base_s * (2**attempt)))


@dataclass(eq=False)
class Permit:
    """One request's place in the budget, from ``acquire`` until its answer is observed or it is
    released without one."""

    started: float
    lost_before: int  # how many requests had ended without headers when this one started
    done: bool = False


@dataclass
class _Window:
    """The service's current window as its answers place it, in our clock."""

    lo: float  # it certainly ends after this ...
    hi: float  # ... and no later than this
    top: float  # the highest count an answer showed in it
    lost_before: int  # the limiter's lost count when that answer's request started


class RateLimiter:
    """The one budget every request of a run draws on, kept by the service's own window.

    Every answer says how many requests the service has counted in the current window
    (``inin-ratelimit-count``), the window's budget (``inin-ratelimit-allowed``, from which the
    rate is re-learned) and the whole seconds until it resets, rounded up
    (``inin-ratelimit-reset``). An answer received at ``r`` for a request started at ``s`` places
    the window's end in ``(s + reset - 1, r + reset]``; intersecting those intervals narrows it to
    about one pacing step, and an answer whose interval begins after the known window's ends
    belongs to the next window. A request may start only when it cannot be counted over the
    budget:

    * while the window may still be running (before the latest end its answers allow): the
      highest count an answer showed, plus every request that may have been counted after that
      one, must leave room. Those are the requests in flight now (in flight may be counted or
      not: they are taken as counted) and those that ended without headers since that answer's
      request started. Any other request counted after it would have been answered with a
      higher count;
    * in the window after it, before any answer from it: our own requests that ended after the
      earliest time the current window may end, or are still in flight, must leave room;
    * and, whatever the headers said or did not say, our own requests that ended within the last
      minute or are in flight must leave room: no request that ended earlier can share a
      one-minute window with a new one. This alone keeps a service without the headers safe.

    Each bound errs only high, so no request of ours is counted over the budget. A request
    without headers (an error without them, a lost connection, an answer too slow to place in a
    window) releases its place in flight and stays counted as lost. A 429's ``Retry-After`` still
    pauses everyone (``pause``).

    Pacing within a window: the budget left is spread over the time left, one request every
    ``time left / (budget left + 1)``, but never faster than ``CATCH_UP`` times the average rate.
    That spends the whole budget by the window's end, including budget a quiet start left
    unused (the hard bounds make the old safety margin below the rate unnecessary), and never
    fires a window's budget in one burst, which would starve anyone else using the same token.
    With no window known (before the first answer, or after one ended) requests go at the
    advertised rate, one every ``60 s / allowed``; a request waiting its turn looks again as soon
    as an answer comes, which usually places the window.

    Callers end each permit ``acquire`` returns: ``observe(headers, permit)`` with the answer's
    headers, or ``release(permit)`` when there is none.
    """

    def __init__(
        self, per_minute: float = DEFAULT_RATE_PER_MINUTE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._lock = asyncio.Lock()
        self.per_minute = per_minute
        self._window: _Window | None = None
        self._in_flight: set[Permit] = set()
        self._ended: list[float] = []  # when requests of the last minute ended, ascending
        self._lost = 0  # requests ended without (usable) headers
        self._paced_at = -math.inf  # when the last request was due in the pacing schedule
        self._blocked_until = 0.0
        self._news: asyncio.Future[None] | None = None  # set when an answer or release comes

    async def acquire(self) -> Permit:
        async with self._lock:
            while True:
                now = self._clock()
                start, due = self._earliest_start(now)
                if start <= now:
                    break
                wait = start - now
                if self._in_flight or wait == math.inf:
                    wait = min(wait, POLL_S)  # an answer may change the picture before then
                # The 1 ms floor keeps float rounding from spinning.
                await self._wait_for_news(max(wait, 0.001))
            permit = Permit(now, self._lost)
            self._in_flight.add(permit)
            self._paced_at = max(due, now)
            return permit

    async def _wait_for_news(self, seconds: float) -> None:
        """Sleep ``seconds``, or less: an answer or a release may make room sooner. (Before the
        first answer the pace is the configured rate, one request every 0.2 s at 300/min;
        the first answer usually shows a budget that allows the next request at once.)"""
        loop = asyncio.get_running_loop()
        news: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _settle, news)
        self._news = news
        try:
            await news
        finally:
            timer.cancel()
            self._news = None

    def observe(self, headers: Mapping[str, str], permit: Permit) -> None:
        """Learn from an answer's rate-limit headers; ends ``permit``, the request answered."""
        if permit.done:
            return
        now = self._clock()
        allowed = _number(headers.get("inin-ratelimit-allowed"))
        count = _number(headers.get("inin-ratelimit-count"))
        reset = _number(headers.get("inin-ratelimit-reset"))
        if allowed and allowed > 0:
            self.per_minute = allowed
        sent, lost_before = permit.started, permit.lost_before
        placed = count is not None and reset is not None and now - sent < VAGUE_S
        self._end(permit, now, lost=not placed)
        if count is None or reset is None or not placed:
            return
        lo, hi = sent + reset - 1, now + reset
        window = self._window
        if window is None or lo >= window.hi:
            self._window = _Window(lo, hi, count, lost_before)  # the window after the one we knew
        elif hi > window.lo:  # the same window; an answer from an earlier one, late, is no news
            window.lo, window.hi = max(window.lo, lo), min(window.hi, hi)
            if count > window.top:
                window.top, window.lost_before = count, lost_before

    def release(self, permit: Permit) -> None:
        """End a request no headers came back for (an error without them, a lost connection, a
        request never sent): it no longer holds a place in flight, but stays counted."""
        if not permit.done:
            self._end(permit, self._clock(), lost=True)

    def pause(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, self._clock() + max(0.0, seconds))

    def paused_for(self) -> float:
        """Seconds everyone still waits for the service's rate limit (0 when not paused): what a
        progress display tells the person watching."""
        now = self._clock()
        until = self._blocked_until
        window = self._window
        if window is not None and now < window.hi and self._used(window) + 1 > self._budget():
            until = max(until, window.hi)
        return max(0.0, until - now)

    def _budget(self) -> int:
        return max(1, math.floor(self.per_minute + 1e-9))

    def _used(self, window: _Window) -> float:
        """At most this many requests are counted in ``window`` (see the class)."""
        return window.top + len(self._in_flight) + (self._lost - window.lost_before)

    def _end(self, permit: Permit, now: float, *, lost: bool) -> None:
        permit.done = True
        if self._news is not None:
            # The waiter runs after this answer has been taken in whole (observe goes on to
            # place its window before the loop turns).
            _settle(self._news)
        self._in_flight.discard(permit)
        self._lost += lost
        if self._ended and now < self._ended[-1]:
            bisect.insort(self._ended, now)
        else:
            self._ended.append(now)

    def _own_clear(self, since: float, now: float, budget: int) -> float:
        """When, from ``now``, our own requests that ended after ``since`` (or after a minute ago,
        whichever is later) or are still in flight leave room for one more: ``now`` if they
        already do, ``inf`` if only answers can make room (that many are in flight)."""
        old = bisect.bisect_right(self._ended, now - WINDOW_S)
        if old > 256 and old * 2 > len(self._ended):
            del self._ended[:old]  # never asked about again
        first = bisect.bisect_right(self._ended, max(since, now - WINDOW_S))
        excess = len(self._in_flight) + len(self._ended) - first - (budget - 1)
        if excess <= 0:
            return now
        if first + excess > len(self._ended):
            return math.inf
        # The minute slides past the ``excess`` earliest of them.
        return self._ended[first + excess - 1] + WINDOW_S

    def _earliest_start(self, now: float) -> tuple[float, float]:
        """The earliest time a request may start, as far as is known at ``now`` (the hard bounds,
        see the class, and pacing), and when it is due in the pacing schedule."""
        budget = self._budget()
        window = self._window
        step = WINDOW_S / budget  # no window known: the advertised rate
        # Our own requests, in the window after the known one (or in any window, none known).
        start = max(self._blocked_until, self._own_clear(window.lo if window else -math.inf, now, budget))
        if window is not None and now < window.hi:
            left = budget - self._used(window)
            if left < 1:
                return max(start, window.hi), window.hi
            if self._paced_at > -math.inf:
                fastest = WINDOW_S / (CATCH_UP * budget)
                step = max((window.hi - self._paced_at) / (left + 1), fastest)
        due = self._paced_at + step
        return max(start, due - PACE_SLACK_S), due


def _settle(news: asyncio.Future[None]) -> None:
    if not news.done():
        news.set_result(None)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Credentials:
    """OAuth client credentials. ``repr`` never shows the secret."""

    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"Credentials(client_id={self.client_id!r}, client_secret=***)"


class TokenSource:
    """Client-credentials tokens, cached and refreshed shortly before they expire."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        login_url: str,
        credentials: Credentials,
        clock: Callable[[], float] = time.monotonic,
        scopes: frozenset[str] = frozenset(),
    ) -> None:
        self._http = http
        self._url = login_url.rstrip("/") + "/oauth/token"
        self._credentials = credentials
        # Least privilege: the token asks only for what the command needs (empty: the client's).
        self._scopes = " ".join(sorted(scopes))
        self.granted: frozenset[str] = frozenset()  # what the last token was granted, when said
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.requests = 0

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at - TOKEN_REFRESH_MARGIN_S:
                await self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` after a 401, unless another request already replaced it."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> None:
        pair = f"{self._credentials.client_id}:{self._credentials.client_secret}".encode()
        headers = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        self.requests += 1
        try:
            response = await self._http.post(
                self._url,
                data={
                    "grant_type": "client_credentials",
                    **({"scope": self._scopes} if self._scopes else {}),
                },
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise TransportError(
                ApiErrorInfo(0, "transport", _describe(exc), method="POST", url=self._url)
            ) from None
        if response.status_code != 200:
            body = _json_or_empty(response)
            info = ApiErrorInfo(
                response.status_code,
                str(body.get("error") or body.get("code") or ""),
                str(body.get("description") or body.get("message") or response.reason_phrase),
                method="POST",
                url=self._url,
            )
            if response.status_code >= 500:
                raise ServerError(info)
            raise AuthError(info)
        body = response.json()
        self._token = str(body["access_token"])
        self.granted = frozenset(str(body.get("scope") or "").split())
        lifetime = float(body.get("expires_in", 86400))
        # A very short lifetime would otherwise make every request fetch a new token.
        self._expires_at = (
            self._clock() + lifetime
            if lifetime > 2 * TOKEN_REFRESH_MARGIN_S
            else self._clock() + lifetime / 2 + TOKEN_REFRESH_MARGIN_S
        )


# `-v` turns this logger on: one line per HTTP exchange. Method, path (no query string: it can
# carry names), status, latency and the service's correlation id; never headers or bodies.
TRACE = logging.getLogger("reconciler.http")
# What a read response's stream becomes: empty, as the body it streamed is in ``content``.
_READ = httpx.ByteStream(b"")


def _trace(method: str, path: str, status: str, started: float, correlation: str) -> None:
    if TRACE.isEnabledFor(logging.DEBUG):
        ms = (time.perf_counter() - started) * 1000
        where = str(path).split("?", 1)[0]
        TRACE.debug(
            "%s %s -> %s in %.0f ms%s", method, where, status, ms, f" ({correlation})" if correlation else ""
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def error_for(response: httpx.Response) -> ApiError:
    """The typed exception for an error response, carrying the Genesys error body's facts."""
    body = _json_or_empty(response)
    request = response.request
    info = ApiErrorInfo(
        status=response.status_code,
        code=str(body.get("code", "")),
        message=str(body.get("message", response.reason_phrase)),
        context_id=str(body.get("contextId") or response.headers.get("ININ-Correlation-Id", "")),
        method=request.method,
        url=request.url.path,
        details=[d for d in body.get("details", []) if isinstance(d, dict)],
    )
    status = response.status_code
    if status in (401, 403):
        return AuthError(info)
    if status == 404:
        return NotFoundError(info)
    if status in (409, 412):
        return ConflictError(info)
    if status == 428:
        return PreconditionRequiredError(info)
    if status == 429:
        return RateLimitedError(info, _number(response.headers.get("Retry-After")) or 1.0)
    if status >= 500:
        return ServerError(info)
    return ApiError(info)


def _encoded(body: Any) -> tuple[bytes | None, dict[str, str]]:
    """A JSON request body encoded once for all attempts, by orjson (several times faster than
    the standard library httpx uses); None when there is no body or orjson refuses it (an integer
    over 64 bits), and httpx encodes it then as before."""
    if body is None:
        return None, {}
    try:
        return orjson.dumps(body), {"Content-Type": "application/json"}
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return None, {}


@dataclass
class RequestStats:
    """Counts a run keeps about its own traffic (shown in the summary and used by benchmarks)."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0


class HttpSession:
    """Authenticated, rate-limited, retrying requests against one org's API."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: Credentials,
        *,
        login_url: str | None = None,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        scopes: frozenset[str] = frozenset(),
    ) -> None:
        self.http = http
        self.tokens = TokenSource(http, login_url or str(http.base_url), credentials, scopes=scopes)
        self.limiter = limiter or RateLimiter()
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.stats = RequestStats()

    async def backoff(self, attempt: int) -> None:
        """Wait the policy's jittered delay before attempt number ``attempt`` (1-based)."""
        await self._sleep(self.retry.delay(attempt, self._rng))

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send one logical request; returns a 2xx/304 response or raises a typed ApiError.

        429 is always retried (the service did not process the request). 5xx and transport
        errors are retried only when ``idempotent``: for a POST the caller must first find out
        whether the first attempt landed.
        """
        attempt = throttled = 0
        refreshed = False
        content, extra = _encoded(json)
        while True:
            permit = await self.limiter.acquire()
            try:
                token = await self.tokens.token()
                all_headers = {"Authorization": f"Bearer {token}", **extra, **(headers or {})}
                self.stats.requests += 1
                started = time.perf_counter()
                try:
                    response = await self.http.request(
                        method,
                        path,
                        content=content,
                        json=json if content is None else None,
                        params=params,
                        headers=all_headers,
                    )
                except httpx.HTTPError as exc:
                    _trace(method, path, type(exc).__name__, started, "")
                    error: ApiError = TransportError(
                        ApiErrorInfo(0, "transport", _describe(exc), method=method, url=path)
                    )
                else:
                    # The response was read and closed, but it and its stream refer to each other:
                    # each one, its body included, would wait for the cyclic collector, which
                    # commands turn off while they build (cli.options.collections_deferred).
                    response.stream = _READ
                    _trace(
                        method,
                        path,
                        str(response.status_code),
                        started,
                        response.headers.get("ININ-Correlation-Id", ""),
                    )
                    self.limiter.observe(response.headers, permit)
                    if response.status_code < 400:
                        return response
                    error = error_for(response)
                    if response.status_code == 401 and not refreshed:
                        # Tokens can be revoked or expire early; one fresh token, then give up.
                        refreshed = True
                        self.tokens.invalidate(token)
                        continue
            finally:
                # No headers (an error without them, a lost connection, a failed token fetch,
                # cancellation): the request's place in flight is freed, and it stays counted.
                self.limiter.release(permit)
            if isinstance(error, RateLimitedError):
                # The service asked us to wait and did not process the request: waiting is the
                # fix, so throttling has its own, larger budget than failures.
                self.stats.throttled += 1
                throttled += 1
                if throttled > self.retry.throttled_attempts:
                    raise error
                self.limiter.pause(error.retry_after)
                continue
            if not (idempotent and isinstance(error, ServerError | TransportError)):
                raise error
            attempt += 1
            if attempt >= self.retry.attempts:
                raise error
            self.stats.retries += 1
            await self.backoff(attempt)
