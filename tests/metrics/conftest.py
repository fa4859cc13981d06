"""An org with busy synthetic traffic, a project using it, and a webhook receiver."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reconciler.emulator.config import EmulatorConfig, Traffic
from reconciler.emulator.server import running_emulator
from tests.conftest import Org

CALLS_PER_SECOND = 40.0  # per prompt: a 2-second window holds about 80 calls

PROMPTS = """\
apiVersion: reconciler.genesys.cloud/v1
kind: Prompt
metadata: {name: assistant}
spec:
  version: 1.0.0
  modelId: genesys-llm-v4
  maxTokens: 2000
  template: "Hello {{ name }}, how can I help?"
  variables: [{name: name, required: true}]
---
apiVersion: reconciler.genesys.cloud/v1
kind: Prompt
metadata: {name: router}
spec:
  version: 1.0.0
  modelId: genesys-llm-v4
  maxTokens: 2000
  template: "Route this conversation."
  variants:
    - {name: short, template: "Route it.", weight: 70}
    - {name: long, template: "Route this conversation, carefully.", weight: 30}
"""


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
def busy_org() -> Iterator[Org]:
    config = EmulatorConfig(
        db=":memory:",
        rate_limit_per_minute=100_000,
        seed=1,
        traffic=Traffic(calls_per_second=CALLS_PER_SECOND, seed=7),
    )
    with running_emulator(config) as url:
        yield Org(url)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []
    handler = type("Hook", (Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def write_gated_project(root: Path, manifests: str = PROMPTS, webhook_url: str | None = None) -> Path:
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    hooks = f"webhooks: [{{url: '{webhook_url}'}}]\n" if webhook_url else ""
    (root / "reconciler.yaml").write_text(
        f"project: tests\nmanifests: [manifests]\n{hooks}", encoding="utf-8"
    )
    (root / "manifests" / "all.yaml").write_text(textwrap.dedent(manifests), encoding="utf-8")
    return root
