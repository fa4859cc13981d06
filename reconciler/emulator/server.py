"""Serving the emulator on loopback: for the CLI, tests and benchmarks."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from reconciler.emulator.app import create_app
from reconciler.emulator.config import EmulatorConfig


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_loopback(host: str) -> bool:
    """Does binding ``host`` keep the emulator on this machine? ('0.0.0.0' and '::' do not.)"""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name that may resolve anywhere: treat it as exposed


def make_server(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8765) -> uvicorn.Server:
    """A server for ``config`` on ``host:port``. Beyond loopback the admin endpoints are guarded:
    if the config has no admin token, one is generated here (read it back from the config)."""
    if config.admin_token is None and not is_loopback(host):
        config.admin_token = secrets.token_urlsafe(24)
    # Dropped connections are raised on purpose; log only what is critical.
    return uvicorn.Server(
        uvicorn.Config(
            create_app(config), host=host, port=port, log_level="critical", access_log=False, lifespan="off"
        )
    )


@contextmanager
def running_emulator(
    config: EmulatorConfig | None = None, host: str = "127.0.0.1", timeout_s: float = 10.0
) -> Iterator[str]:
    """An emulator on a free loopback port in a background thread; yields its base URL."""
    port = free_port(host)
    server = make_server(config or EmulatorConfig(), host, port)
    thread = threading.Thread(target=server.run, name=f"emulator-{port}", daemon=True)
    thread.start()
    base_url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"emulator did not start on {base_url}")
        time.sleep(0.01)
    try:
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)


def admin(base_url: str, method: str, path: str, body: object = None, token: str | None = None) -> object:
    """Call an admin endpoint (reset, stats, faults, concurrent-writer, bulk)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.request(method, f"{base_url}/__emulator/{path}", json=body, timeout=60, headers=headers)
    response.raise_for_status()
    return response.json()
