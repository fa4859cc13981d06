"""Webhook notifications: signed, bounded in time, never raising."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from reconciler.emulator.server import free_port
from reconciler.notify import SIGNATURE_HEADER, Event, WebhookTarget, deliver

RECEIVED: list[dict[str, Any]] = []


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        RECEIVED.append({"path": self.path, "body": body, "signature": self.headers.get(SIGNATURE_HEADER)})
        if self.path == "/slow":
            time.sleep(1.5)
        status = 500 if self.path == "/broken" else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    RECEIVED.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


EVENT = Event("PROMPT_UPDATED", {"name": "greeter"}, "run-1", "2026-11-23T00:00:00Z")


def send(*targets: WebhookTarget) -> list[Any]:
    async def run() -> list[Any]:
        async with httpx.AsyncClient() as http:
            return await deliver(http, targets, EVENT)

    return asyncio.run(run())


def test_signed_delivery(receiver: str) -> None:
    [outcome] = send(WebhookTarget(f"{receiver}/hook?token=abc", "shh-secret"))
    assert outcome.delivered and outcome.http_status == 204
    got = RECEIVED[0]
    expected = "sha256=" + hmac.new(b"shh-secret", got["body"], hashlib.sha256).hexdigest()
    assert got["signature"] == expected
    assert json.loads(got["body"])["event"] == "PROMPT_UPDATED"
    assert "token" not in outcome.url and "shh-secret" not in json.dumps(outcome.as_record())


def test_slow_and_broken_receivers_fail_within_the_bound(receiver: str) -> None:
    started = time.perf_counter()
    slow, broken, refused = send(
        WebhookTarget(f"{receiver}/slow", None, 0.3),
        WebhookTarget(f"{receiver}/broken", None, 0.5),
        WebhookTarget(f"http://127.0.0.1:{free_port()}/x", None, 0.5),
    )
    elapsed = time.perf_counter() - started
    assert not slow.delivered and not broken.delivered and not refused.delivered
    assert broken.attempts == 2 and broken.http_status == 500
    assert elapsed < 0.3 * 2 + 1.0  # bounded by the slowest target's budget, delivered concurrently
