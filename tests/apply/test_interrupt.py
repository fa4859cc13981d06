"""Ctrl-C during apply: the first stops new writes and ends the run with its summary; the journal
verifies and the next apply continues where it stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from reconciler.emulator.config import EmulatorConfig, Faults
from reconciler.emulator.server import running_emulator
from reconciler.journal import Journal, RecordType, verify
from tests.conftest import Org

FUNCTION = """\
apiVersion: reconciler.genesys.cloud/v1
kind: FunctionDefinition
metadata: {{name: func-{i:02d}}}
spec:
  name: f{i}
  description: Number {i}.
  timeoutMillis: 1000
  parameters: {{type: object, properties: {{}}}}
"""


def test_a_first_ctrl_c_finishes_in_flight_writes_and_ends_the_run(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "all.yaml").write_text("---\n".join(FUNCTION.format(i=i) for i in range(30)))
    (tmp_path / "reconciler.yaml").write_text("project: interrupt\nmanifests: [manifests]\n")
    config = EmulatorConfig(rate_limit_per_minute=1_000_000, faults=Faults(latency_ms=150))
    with running_emulator(config) as url:
        env = {**os.environ, **Org(url).environ(), "RECONCILER_PARALLELISM": "2"}
        command = [sys.executable, "-c", "from reconciler.cli import main; main()", "apply", "--auto-approve"]
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        journal_path = tmp_path / ".reconciler" / "journal.jsonl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until writes are under way
            if journal_path.exists() and journal_path.read_text().count('"type":"outcome"') >= 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 1, output
        assert "Interrupted: no new writes" in output and "Traceback" not in output, output
        assert "Run apply again to continue" in output, output
        assert verify(journal_path).ok
        records = list(Journal(journal_path).records())
        end = [r for r in records if r.type is RecordType.RUN_END]
        assert len(end) == 1 and end[0].data["summary"]["interrupted"] is True
        intents = sum(1 for r in records if r.type is RecordType.INTENT)
        outcomes = sum(1 for r in records if r.type is RecordType.OUTCOME)
        assert intents == outcomes and 2 <= intents < 30  # every started write finished; not all started
        again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"{30 - intents} created" in again.stdout, again.stdout
