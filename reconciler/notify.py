"""Outbound webhook notifications after applied changes: signed, bounded, best-effort.

A delivery never raises and never holds an apply up beyond its time bound: every failure
becomes a ``DeliveryOutcome`` that apply journals. Bodies are signed with HMAC-SHA256 when the
webhook has a secret; the secret itself is never part of an outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

ATTEMPTS = 2
SIGNATURE_HEADER = "X-Reconciler-Signature"


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret: str | None = None
    timeout_seconds: float = 2.0

    def __repr__(self) -> str:
        return f"WebhookTarget(url={_public_url(self.url)!r}, secret={'***' if self.secret else None})"


@dataclass(frozen=True)
class Event:
    name: str  # e.g. PROMPT_UPDATED
    data: dict[str, Any]
    run_id: str
    timestamp: str

    def body(self) -> bytes:
        return json.dumps(
            {"event": self.name, "data": self.data, "runId": self.run_id, "timestamp": self.timestamp},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()


@dataclass(frozen=True)
class DeliveryOutcome:
    url: str
    event: str
    delivered: bool
    http_status: int
    attempts: int
    error: str = ""

    def as_record(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "event": self.event,
            "delivered": self.delivered,
            "http_status": self.http_status,
            "attempts": self.attempts,
            "error": self.error,
        }


def _public_url(url: str) -> str:
    """The URL without query string or credentials: those may carry tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def _deliver_one(client: httpx.AsyncClient, target: WebhookTarget, event: Event) -> DeliveryOutcome:
    body = event.body()
    headers = {
        "Content-Type": "application/json",
        "X-Reconciler-Event": event.name,
        "X-Reconciler-Delivery": str(uuid.uuid4()),
    }
    if target.secret:
        headers[SIGNATURE_HEADER] = sign(target.secret, body)
    deadline = time.monotonic() + target.timeout_seconds * ATTEMPTS
    status, error, attempts = 0, "", 0
    for attempt in range(1, ATTEMPTS + 1):
        attempts = attempt
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            response = await asyncio.wait_for(
                client.post(target.url, content=body, headers=headers, timeout=target.timeout_seconds),
                timeout=min(remaining, target.timeout_seconds),
            )
        except (httpx.HTTPError, TimeoutError) as exc:
            status, error = 0, type(exc).__name__
            continue
        status = response.status_code
        if status < 300:
            return DeliveryOutcome(_public_url(target.url), event.name, True, status, attempt)
        error = f"HTTP {status}"
        if status < 500:
            break  # the receiver refused it; asking again will not change its mind
    return DeliveryOutcome(_public_url(target.url), event.name, False, status, attempts, error)


async def deliver(
    client: httpx.AsyncClient, targets: Sequence[WebhookTarget], event: Event
) -> list[DeliveryOutcome]:
    """Send ``event`` to every target concurrently; never raises."""
    results = await asyncio.gather(*(_deliver_one(client, t, event) for t in targets), return_exceptions=True)
    return [
        r
        if isinstance(r, DeliveryOutcome)
        else DeliveryOutcome(_public_url(t.url), event.name, False, 0, 0, type(r).__name__)
        for r, t in zip(results, targets, strict=True)
    ]
