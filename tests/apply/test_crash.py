"""Killing apply with SIGKILL at 20 seeded instants: the journal stays verifiable (a torn tail
is set aside and reported) and the next apply converges without duplicates.

`RECONCILER_TEST_SEED` replaces the seed that picks the instants."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.generate import generate, write_manifests
from reconciler.cli import main
from reconciler.emulator.config import EmulatorConfig, Faults
from reconciler.emulator.server import running_emulator
from reconciler.journal import Journal, verify
from tests.conftest import Org

KILLS = 20
SEED = int(os.environ.get("RECONCILER_TEST_SEED", "20261123"))

pytestmark = pytest.mark.slow


def test_sigkill_anywhere_leaves_a_verifiable_journal_and_no_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reconciler.yaml").write_text("project: crash\nmanifests: [manifests]\n")
    documents = generate(12, seed=11)
    rng = random.Random(SEED)
    journal_path = tmp_path / ".reconciler" / "journal.jsonl"
    config = EmulatorConfig(rate_limit_per_minute=1_000_000, faults=Faults(latency_ms=40))
    with running_emulator(config) as url:
        org = Org(url)
        env = {**os.environ, **org.environ(), "RECONCILER_PARALLELISM": "1"}
        set_aside = 0
        for i in range(KILLS):
            for doc in documents:  # every run has every resource to change
                if doc["kind"] == "FunctionDefinition":
                    doc["spec"]["description"] = f"Revision {i}."
                elif doc["kind"] == "Prompt":
                    doc["spec"]["version"] = f"1.{i}.0"
            write_manifests(documents, tmp_path / "manifests")
            process = subprocess.Popen(
                [sys.executable, "-c", "from reconciler.cli import main; main()", "apply", "--auto-approve"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.3, 2.0))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

            journal = Journal(
                journal_path, writable=True
            )  # opening for writing sets a torn tail aside and says so
            set_aside += len(journal.set_aside)
            report = verify(journal_path)
            assert report.ok, f"kill {i}: {report.problem}"

            result = CliRunner().invoke(
                main, ["apply", "--auto-approve"], env=org.environ(), catch_exceptions=False
            )
            assert result.exit_code == 0, f"kill {i}: {result.output[-2000:]}"
            names = [p["name"] for p in org.listing("/api/v2/ai/llm/prompts")]
            assert len(names) == len(set(names)) == sum(1 for d in documents if d["kind"] == "Prompt")
        plan = CliRunner().invoke(
            main, ["plan", "--detailed-exitcode"], env=org.environ(), catch_exceptions=False
        )
        assert plan.exit_code == 0, plan.output[-2000:]
        assert verify(journal_path).ok
        print(f"{KILLS} kills, {set_aside} torn tail(s) set aside")
