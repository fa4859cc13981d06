"""The HTTP layer every request of a run goes through: auth, one rate limiter, retries, errors.

What lives here is kind-agnostic: OAuth client credentials with a cached token (refreshed before
expiry and once on a 401), ONE token bucket shared by all requests of a run that also obeys the
service's ``inin-ratelimit-*`` headers and ``Retry-After``, capped exponential backoff with full
jitter, and the mapping of error responses to the typed exceptions in ``reconciler.errors``.

What must not live here: anything about a particular kind (that is ``reconciler.kinds``) or about what a
write means (that is ``apply``). Non-idempotent requests (POST) are never retried after the
request may have reached the service; the caller decides, because only it can look up whether a
lost create landed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
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
# Run a little below the advertised rate: the service counts in windows we cannot see exactly,
# and a 429 costs a full Retry-After pause, far more than the 3% we give up.
RATE_SAFETY = 0.97
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


class RateLimiter:
    """A token bucket shared by every request of a run.

    It starts at the configured rate, re-learns the rate from ``inin-ratelimit-allowed``, stops
    everyone when the service says the window is used up (``inin-ratelimit-count`` reaching
    ``allowed``), and pauses everyone for a 429's ``Retry-After``.
    """

    def __init__(
        self, per_minute: float = DEFAULT_RATE_PER_MINUTE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._lock = asyncio.Lock()
        self._set_rate(per_minute)
        self._tokens = 1.0
        self._updated = clock()
        self._blocked_until = 0.0

    def _set_rate(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self._rate = max(per_minute * RATE_SAFETY / 60.0, 1e-6)
        # About one second of burst: enough to overlap round trips, too little to overrun a window.
        self._capacity = max(1.0, self._rate)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._blocked_until:
                    await asyncio.sleep(self._blocked_until - now)
                    continue
                self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                # The tolerance and the 1 ms floor keep float rounding from spinning forever.
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return
                await asyncio.sleep(max((1.0 - self._tokens) / self._rate, 0.001))

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn from a response's rate-limit headers."""
        allowed = _number(headers.get("inin-ratelimit-allowed"))
        count = _number(headers.get("inin-ratelimit-count"))
        reset = _number(headers.get("inin-ratelimit-reset"))
        if allowed and allowed != self.per_minute:
            self._set_rate(allowed)
        if allowed and count is not None and reset is not None and count >= allowed:
            self.pause(reset)

    def pause(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, self._clock() + max(0.0, seconds))
        self._tokens = 0.0

    def paused_for(self) -> float:
        """Seconds everyone still waits for the service's rate limit (0 when not paused): what a
        progress display tells the person watching."""
        return max(0.0, self._blocked_until - self._clock())


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
            await self.limiter.acquire()
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
                _trace(
                    method,
                    path,
                    str(response.status_code),
                    started,
                    response.headers.get("ININ-Correlation-Id", ""),
                )
                self.limiter.observe(response.headers)
                if response.status_code < 400:
                    return response
                error = error_for(response)
                if response.status_code == 401 and not refreshed:
                    # Tokens can be revoked or expire early; one fresh token, then give up.
                    refreshed = True
                    self.tokens.invalidate(token)
                    continue
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
