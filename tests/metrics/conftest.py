"""An org with busy synthetic traffic, a project using it, and a webhook receiver."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.emulator.config import EmulatorConfig, Traffic
from reconciler.emulator.server import running_emulator
from tests.conftest import Org

CALLS_PER_SECOND = 40.0  # per prompt: a 2-second window holds about 80 calls
# The busy org's clock starts this far behind the tests' (wall) clock. What a test applies is
# stamped on the emulator's clock, so once ``catch_up`` has advanced it by as much, the prompts
# have this much traffic behind them inside the windows the CLI reads off the wall clock: the
# history a test needs, without waiting for it.
HISTORY_S = 2.5

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


@pytest.fixture
def busy_org() -> Iterator[Org]:
    config = EmulatorConfig(
        db=":memory:",
        rate_limit_per_minute=100_000,
        seed=1,
        traffic=Traffic(calls_per_second=CALLS_PER_SECOND, seed=7),
        clock_offset_s=-HISTORY_S,
    )
    with running_emulator(config) as url:
        yield Org(url)


def catch_up(org: Org) -> str:
    """Move the busy org's clock up to the wall clock: what was applied since it started has
    ``HISTORY_S`` seconds of traffic. The emulator's time afterwards, as an ISO instant."""
    return str(org.admin("POST", "clock", {"advance_s": HISTORY_S})["now"])


def write_gated_project(root: Path, manifests: str = PROMPTS, webhook_url: str | None = None) -> Path:
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    hooks = f"webhooks: [{{url: '{webhook_url}'}}]\n" if webhook_url else ""
    (root / "reconciler.yaml").write_text(
        f"project: tests\nmanifests: [manifests]\n{hooks}", encoding="utf-8"
    )
    (root / "manifests" / "all.yaml").write_text(textwrap.dedent(manifests), encoding="utf-8")
    return root
