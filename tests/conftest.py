"""Shared fixtures: an org (a real emulator on a loopback socket), a project folder using it, and a
webhook receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.server import running_emulator

CLIENT_ID, CLIENT_SECRET = "emulator-client", "emulator-secret"


@dataclass
class Org:
    """The emulator under test plus a few direct calls tests use to act 'out of band'."""

    base_url: str

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, f"{self.base_url}/__emulator/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def token(self) -> str:
        response = httpx.post(
            f"{self.base_url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(CLIENT_ID, CLIENT_SECRET),
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def api(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.base_url}{path}",
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {self.token()}", **(headers or {})},
        )

    def listing(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.api("GET", f"{path}?pageSize=100&pageNumber={page}").json()
            out.extend(body["entities"])
            if not body.get("nextUri"):
                return out
            page += 1

    def environ(self) -> dict[str, str]:
        return {
            "GENESYS_BASE_URL": self.base_url,
            "GENESYS_CLIENT_ID": CLIENT_ID,
            "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
        }


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest cache lives in the user's cache folder: keep the tests' out of ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("user-cache")))


@pytest.fixture
def org() -> Iterator[Org]:
    with running_emulator(EmulatorConfig(db=":memory:", rate_limit_per_minute=100_000, seed=1)) as url:
        yield Org(url)


def function_manifest(name: str, description: str = "Looks things up.", timeout_ms: int = 3000) -> str:
    """A small FunctionDefinition manifest (one string parameter), the tests' common resource."""
    return textwrap.dedent(f"""\
        apiVersion: reconciler.genesys.cloud/v1
        kind: FunctionDefinition
        metadata: {{name: {name}}}
        spec:
          name: {name.replace("-", "_")}
          description: "{description}"
          timeoutMillis: {timeout_ms}
          parameters: {{type: object, properties: {{q: {{type: string}}}}}}
        """)


def write_project(root: Path, manifests: str, project: str = "tests") -> Path:
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    (root / "reconciler.yaml").write_text(f"project: {project}\nmanifests: [manifests]\n", encoding="utf-8")
    (root / "manifests" / "all.yaml").write_text(textwrap.dedent(manifests), encoding="utf-8")
    return root


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class Receiver(BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []
    handler = type("Hook", (Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
