"""`apply --health-gate`: a change that makes a prompt worse is rolled back on its own.

Each test applies version 1 with one gate's length of traffic behind it (the emulator's clock
catches up, no waiting) so there is a baseline, then applies version 2 with a gate of a few
seconds, waited for real, while the emulator is told how version 2 behaves.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.journal import Journal, RecordType, verify
from tests.conftest import Org
from tests.metrics.conftest import PROMPTS, catch_up, write_gated_project

GATE = "2s"
V1 = "Hello {{ name }}, how can I help?"
V2 = "Hi {{ name }}! What can I do for you?"
PROMPTS_URL = "/api/v2/ai/llm/prompts"


def cli(org: Org, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=org.environ(), catch_exceptions=False)
    return result.exit_code, result.output


def assistant(org: Org) -> dict[str, Any]:
    [found] = [p for p in org.listing(PROMPTS_URL) if p["name"] == "assistant"]
    return found


@pytest.fixture
def hook(webhook: tuple[str, list[bytes]]) -> list[bytes]:
    return webhook[1]


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy_org: Org, webhook: tuple[str, list[bytes]]
) -> Path:
    """Version 1 applied and live for more than one gate's length (the baseline); version 2 in git."""
    monkeypatch.chdir(write_gated_project(tmp_path, PROMPTS, webhook[0]))
    assert cli(busy_org, "apply", "--auto-approve")[0] == 0
    catch_up(busy_org)  # version 1 has HISTORY_S (> GATE) of traffic behind it
    manifest = tmp_path / "manifests" / "all.yaml"
    manifest.write_text(manifest.read_text().replace(V1, V2))
    webhook[1].clear()
    return tmp_path


@pytest.fixture
def when_v2_is_live(busy_org: Org) -> Iterator[Callable[[Callable[[], None]], None]]:
    """Run an action in the background as soon as version 2 is live (the gate is watching then)."""
    threads: list[threading.Thread] = []

    def arm(action: Callable[[], None]) -> None:
        def wait_then_act() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and assistant(busy_org)["template"] != V2:
                time.sleep(0.02)
            action()

        threads.append(threading.Thread(target=wait_then_act, daemon=True))
        threads[-1].start()

    yield arm
    for thread in threads:
        thread.join(timeout=30)


def verdicts(project: Path) -> list[dict[str, Any]]:
    journal = Journal(project / ".reconciler" / "journal.jsonl")
    return [r.data for r in journal.records() if r.type is RecordType.HEALTH_VERDICT]


def events(hook: list[bytes]) -> list[str]:
    return [json.loads(body)["event"] for body in hook]


def test_an_unhealthy_change_is_rolled_back(
    busy_org: Org, project: Path, hook: list[bytes], when_v2_is_live: Callable[[Callable[[], None]], None]
) -> None:
    when_v2_is_live(lambda: busy_org.admin("PUT", "metrics", {"assistant": {"successRate": 0.3}}))
    started = time.monotonic()
    code, out = cli(busy_org, "apply", "--auto-approve", "--health-gate", GATE)
    took = time.monotonic() - started
    assert code == 4, out
    assert "assistant: successRate" in out and "breaches" in out
    live = assistant(busy_org)
    assert live["template"] == V1  # back to the previous revision...
    assert live["revision"] == 3  # ...by a new write (1: v1, 2: v2, 3: v1 again)
    assert verify(project / ".reconciler" / "journal.jsonl").ok
    [verdict] = verdicts(project)
    assert verdict["verdict"] == "breached" and verdict["action"] == "rollback"
    [whole] = [p for p in verdict["prompts"] if p["prompt"] == "assistant" and p["variant"] is None]
    assert whole["watched"]["successRate"] < 0.45 and whole["baseline"]["successRate"] > 0.9
    assert {c["metric"] for c in whole["checks"] if c["breached"]} == {"successRate"}
    # The router was not changed by this run: not watched, not rolled back.
    assert {p["prompt"] for p in verdict["prompts"]} == {"assistant"}
    assert "HEALTH_GATE_FAILED" in events(hook) and "PROMPT_UPDATED" in events(hook)
    [failed] = [json.loads(b) for b in hook if json.loads(b)["event"] == "HEALTH_GATE_FAILED"]
    assert failed["data"]["rollback"]["rolledBack"] == ["Prompt/assistant"]
    assert took < 2.0 + 6.0  # the gate's 2 s plus two applies' worth of work


def test_a_healthy_change_stays(busy_org: Org, project: Path, hook: list[bytes]) -> None:
    code, out = cli(busy_org, "apply", "--auto-approve", "--health-gate", GATE)
    assert code == 0, out
    assert "Health gate passed" in out
    assert assistant(busy_org)["template"] == V2
    [verdict] = verdicts(project)
    assert verdict["verdict"] == "healthy" and verdict["action"] == "none"
    assert "HEALTH_GATE_FAILED" not in events(hook)


def test_the_environment_setting_and_declared_limits(busy_org: Org, project: Path) -> None:
    """healthGate in reconciler.yaml turns the gate on; a declared limit is held even when the
    change behaves exactly like the baseline (p95 latency of healthy traffic is about 1 s)."""
    (project / "reconciler.yaml").write_text(
        "project: tests\nmanifests: [manifests]\n"
        "environments:\n  test:\n    base_url: '" + busy_org.base_url + "'\n    healthGate: 2s\n"
    )
    manifest = project / "manifests" / "all.yaml"
    manifest.write_text(
        manifest.read_text().replace(
            "variables: [{name: name, required: true}]",
            "variables: [{name: name, required: true}]\n  healthGate: {maxLatencyMs: 500}",
        )
    )
    code, out = cli(busy_org, "apply", "--auto-approve", "--env", "test")
    assert code == 4, out
    assert "p95LatencyMs" in out and "declared" in out
    assert assistant(busy_org)["template"] == V1


@pytest.mark.parametrize(("decision", "exit_code", "template"), [("pass", 0, V2), ("fail", 4, V1)])
def test_too_little_traffic_follows_the_flag(
    busy_org: Org,
    project: Path,
    when_v2_is_live: Callable[[Callable[[], None]], None],
    decision: str,
    exit_code: int,
    template: str,
) -> None:
    when_v2_is_live(lambda: busy_org.admin("PUT", "traffic", {"callsPerSecond": 1}))
    code, out = cli(busy_org, "apply", "--auto-approve", "--health-gate", GATE, "--on-inconclusive", decision)
    assert code == exit_code, out
    assert "too little traffic" in out
    assert assistant(busy_org)["template"] == template
    [verdict] = verdicts(project)
    assert verdict["verdict"] == "inconclusive"
    assert verdict["action"] == ("rollback" if decision == "fail" else "none")


def test_a_conflict_during_the_rollback_is_reported_not_overwritten(
    busy_org: Org, project: Path, when_v2_is_live: Callable[[Callable[[], None]], None]
) -> None:
    def break_it_and_edit_by_hand() -> None:
        busy_org.admin("PUT", "metrics", {"assistant": {"successRate": 0.2}})
        live = assistant(busy_org)
        edited = {**live, "template": "Edited by a human, {{ name }}."}
        response = busy_org.api("PUT", f"{PROMPTS_URL}/{live['id']}", edited, {"If-Match": live["etag"]})
        assert response.status_code == 200, response.text

    when_v2_is_live(break_it_and_edit_by_hand)
    code, out = cli(busy_org, "apply", "--auto-approve", "--health-gate", GATE)
    assert code == 4, out
    assert "Conflict during the rollback" in out and "INCOMPLETE" in out
    assert assistant(busy_org)["template"] == "Edited by a human, {{ name }}."
    assert verify(project / ".reconciler" / "journal.jsonl").ok
