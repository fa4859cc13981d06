"""The emulator in its own process, for benchmarks: started on a free loopback port, stopped after."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


@contextmanager
def emulator(latency_ms: float, rate: int, db: Path) -> Iterator[str]:
    from reconciler.emulator.server import free_port

    port = free_port()
    args = [
        sys.executable,
        "-c",
        "from reconciler.cli import main; main()",
        "emulator",
        "serve",
        "--port",
        str(port),
        "--db",
        str(db),
        "--rate-limit",
        str(rate),
        "--latency-ms",
        str(latency_ms),
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def admin(url: str, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, f"{url}/__emulator/{path}", json=body, timeout=300)
    response.raise_for_status()
    return response.json()
