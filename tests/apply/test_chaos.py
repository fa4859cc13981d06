"""Apply under faults: 429s, 5xx, lost responses, jitter and a concurrent writer, all seeded.

After at most three runs everything that met no conflict has converged, no prompt exists twice,
no out-of-band edit was overwritten by a run that had not seen it, and the journal verifies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench.generate import generate, write_manifests
from reconciler.cli import main
from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.server import running_emulator
from reconciler.journal import verify
from tests.conftest import Org

CHAOS = {
    "latency_ms": 2,
    "jitter_ms": 8,
    "fail": {"429": 0.1, "500": 0.04, "503": 0.03, "504": 0.03},
    "drop": 0.03,
    "concurrent_writer": 0.05,
    "seed": 20261123,
}
KINDS = {"function-definitions": "id", "context-policies": "id", "prompts": "name"}


def edited_still_there(org: Org, edited: list[dict[str, Any]]) -> list[str]:
    """Resources whose out-of-band edit is gone (overwritten)."""
    lost = []
    for item in edited:
        body = org.api("GET", f"/api/v2/ai/llm/{item['kind']}/{item['id']}").json()
        if (body.get("labels") or {}).get("edited-out-of-band") != "true":
            lost.append(f"{item['kind']}/{item['id']}")
    return lost


def revised(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for doc in documents:
        spec = dict(doc["spec"])
        if doc["kind"] == "FunctionDefinition":
            spec["description"] += " Revised."
        elif doc["kind"] == "Prompt":
            spec["template"] = spec["template"].replace("You are assistant", "You are helper")
        else:
            spec["tokenLimits"] = {**spec["tokenLimits"], "softLimit": 11000}
        out.append({**doc, "spec": spec})
    return out


def test_chaos_converges_without_duplicates_or_lost_updates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reconciler.yaml").write_text("project: chaos\nmanifests: [manifests]\n")
    documents = generate(300, seed=3)
    write_manifests(documents, tmp_path / "manifests")
    config = EmulatorConfig(rate_limit_per_minute=1_000_000, seed=5)
    with running_emulator(config) as url:
        org = Org(url)
        env = {**org.environ(), "RECONCILER_PARALLELISM": "16"}
        org.admin("PUT", "faults", CHAOS)
        # Creates can meet the concurrent writer too (a create whose response was lost, edited
        # before the retry): that is a conflict (3), never an error.
        first = CliRunner().invoke(main, ["apply", "--auto-approve"], env=env, catch_exceptions=False)
        assert first.exit_code in (0, 3), first.output[-3000:]
        # Now every resource changes, so the concurrent writer meets updates, not only creates.
        write_manifests(revised(documents), tmp_path / "manifests")
        seen_edits = 0
        codes = []
        for _ in range(3):
            result = CliRunner().invoke(main, ["apply", "--auto-approve"], env=env, catch_exceptions=False)
            codes.append(result.exit_code)
            stats = org.admin("GET", "stats")
            new_edits = stats["edited_out_of_band"][seen_edits:]
            seen_edits = len(stats["edited_out_of_band"])
            # The run that met these edits must not have overwritten them.
            org.admin("PUT", "faults", {})
            assert edited_still_there(org, new_edits) == [], result.output[-3000:]
            org.admin("PUT", "faults", CHAOS)
            if result.exit_code == 0:
                break
        org.admin("PUT", "faults", {})
        stats = org.admin("GET", "stats")
        print("exit codes", codes, "statuses", stats["statuses"], "edits", len(stats["edited_out_of_band"]))
        # The faults really happened: throttling, server errors and out-of-band edits.
        assert stats["throttled"] > 0 and stats["statuses"].get("503", 0) > 0 and stats["edited_out_of_band"]
        assert codes[-1] in (0, 3), codes
        prompts = org.listing("/api/v2/ai/llm/prompts")
        names = [p["name"] for p in prompts]
        assert len(names) == len(set(names)) == sum(1 for d in documents if d["kind"] == "Prompt")
        plan = CliRunner().invoke(
            main, ["plan", "--format", "json"], env=org.environ(), catch_exceptions=False
        )
        assert plan.exit_code == 0, plan.output[-2000:]
        import json

        remaining = {
            (c["kind"], c["name"]) for c in json.loads(plan.stdout)["changes"] if c["action"] != "no-op"
        }
        # Whatever is left is exactly what the last run met as a conflict: someone else's edit.
        last_edits = {(i["kind"], i["id"]) for i in org.admin("GET", "stats")["edited_out_of_band"]}
        assert len(remaining) <= len(last_edits), (remaining, codes)
        assert verify(tmp_path / ".reconciler" / "journal.jsonl").ok
