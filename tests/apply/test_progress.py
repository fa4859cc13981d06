"""On a terminal a long apply shows one live line (done/total, time left, rate-limit waits);
in a pipe or CI log it prints one line per change, and nothing of the live line."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from reconciler.emulator.config import EmulatorConfig, Faults
from reconciler.emulator.server import running_emulator
from tests.conftest import Org, function_manifest

COMMAND = [sys.executable, "-c", "from reconciler.cli import main; main()", "apply", "--auto-approve"]


def project(root: Path, n: int) -> None:
    (root / "manifests").mkdir()
    names = [f"func-{root.name}-{i:02d}" for i in range(n)]  # each project its own resources
    (root / "manifests" / "all.yaml").write_text("---\n".join(function_manifest(name) for name in names))
    (root / "reconciler.yaml").write_text("project: progress\nmanifests: [manifests]\n")


def run_on_a_terminal(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float = 60
) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal; what it drew there, and the exit code."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    drawn = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            drawn += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=10), drawn.decode("utf-8", "replace")


def test_a_terminal_gets_a_live_counter_and_a_pipe_gets_lines(tmp_path: Path) -> None:
    config = EmulatorConfig(rate_limit_per_minute=1_000_000, faults=Faults(latency_ms=60))
    with running_emulator(config) as url:
        env = {**os.environ, **Org(url).environ(), "RECONCILER_PARALLELISM": "2", "COLUMNS": "120"}
        terminal = tmp_path / "terminal"
        terminal.mkdir()
        project(terminal, 20)
        code, drawn = run_on_a_terminal(COMMAND, terminal, env)
        assert code == 0, drawn
        assert "/20" in drawn and "elapsed" in drawn and "left" in drawn, drawn[-2000:]
        assert "✓ create" not in drawn  # the live line stands for the per-change lines
        piped = tmp_path / "piped"
        piped.mkdir()
        project(piped, 20)
        done = subprocess.run(COMMAND, cwd=piped, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("✓ create") == 20 and "elapsed" not in done.stderr


def test_a_terminal_is_told_when_the_rate_limit_holds_every_request(tmp_path: Path) -> None:
    config = EmulatorConfig(rate_limit_per_minute=1_000_000)
    with running_emulator(config) as url:
        org = Org(url)
        org.admin("PUT", "faults", {"fail": {"429": 0.5}, "retry_after_s": 1, "seed": 3})
        env = {**os.environ, **org.environ(), "RECONCILER_PARALLELISM": "2", "COLUMNS": "160"}
        (tmp_path / "limited").mkdir()
        project(tmp_path / "limited", 8)
        code, drawn = run_on_a_terminal(COMMAND, tmp_path / "limited", env)
        assert code == 0, drawn[-2000:]
        assert "waiting on the rate limit" in drawn, drawn[-2000:]
