"""Lost updates, generatively: Hypothesis interleaves plans, applies, out-of-band writes and
injected faults against a real emulator, and checks after every step that no out-of-band write
was overwritten by an apply whose plan had not seen it.

With `RECONCILER_TEST_SEED` set, Hypothesis explores at random (and the emulator's faults use that
seed) instead of replaying its derandomized examples, to run the scenario many times."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from reconciler.cli import main
from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.server import running_emulator
from tests.conftest import Org, function_manifest

NAMES = ("func-a", "func-b", "func-c")
PATH = "/api/v2/ai/llm/function-definitions/"
SEED = os.environ.get("RECONCILER_TEST_SEED")

pytestmark = pytest.mark.slow


class LostUpdates(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp())
        (self.folder / "manifests").mkdir()
        (self.folder / "reconciler.yaml").write_text("project: lost-updates\nmanifests: [manifests]\n")
        ORG.admin("POST", "reset")
        ORG.admin("PUT", "faults", {})
        self.step = 0
        self.plan_step: int | None = None
        self.oob: dict[str, tuple[str, int]] = {}  # name -> (description written, step)
        for name in NAMES:
            self._desired(name, "initial")
        assert self._cli("apply", "--auto-approve") == 0

    def _cli(self, *args: str) -> int:
        cwd = os.getcwd()
        os.chdir(self.folder)
        try:
            return CliRunner().invoke(main, list(args), env=ORG.environ(), catch_exceptions=False).exit_code
        finally:
            os.chdir(cwd)

    def _desired(self, name: str, description: str) -> None:
        text = function_manifest(name, description, timeout_ms=1000)
        (self.folder / "manifests" / f"{name}.yaml").write_text(text)

    @rule(name=st.sampled_from(NAMES), text=st.text("abcdefgh ", min_size=1, max_size=12))
    def edit_git(self, name: str, text: str) -> None:
        self.step += 1
        self._desired(name, f"git {text.strip() or 'x'}")

    @rule()
    def plan(self) -> None:
        self.step += 1
        if self._cli("plan", "-o", "plan.json") == 0:
            self.plan_step = self.step

    @rule(name=st.sampled_from(NAMES), n=st.integers(0, 10_000))
    def write_out_of_band(self, name: str, n: int) -> None:
        self.step += 1
        ORG.admin("PUT", "faults", {})
        live = ORG.api("GET", PATH + name)
        description = f"out of band {n} at {self.step}"
        response = ORG.api(
            "PUT",
            PATH + name,
            {**live.json(), "description": description},
            {"If-Match": live.headers["ETag"]},
        )
        assert response.status_code == 200
        self.oob[name] = (description, self.step)

    @rule(drop=st.sampled_from([0.0, 0.2]), fail=st.sampled_from([0.0, 0.2]))
    def faults(self, drop: float, fail: float) -> None:
        ORG.admin("PUT", "faults", {"drop": drop, "fail": {"503": fail}, "seed": self.step + int(SEED or 0)})

    @precondition(lambda self: self.plan_step is not None)
    @rule()
    def apply_saved_plan(self) -> None:
        self.step += 1
        self._cli("apply", "plan.json")
        ORG.admin("PUT", "faults", {})

    @invariant()
    def no_unseen_write_overwritten(self) -> None:
        if self.plan_step is None:
            return
        ORG.admin("PUT", "faults", {})
        for name, (description, step) in self.oob.items():
            if step > self.plan_step:  # made after the saved plan: no apply of it may undo it
                assert ORG.api("GET", PATH + name).json()["description"] == description, name


ORG: Org


def test_no_out_of_band_write_is_ever_overwritten() -> None:
    global ORG
    with running_emulator(EmulatorConfig(rate_limit_per_minute=1_000_000, seed=3)) as url:
        ORG = Org(url)
        run_state_machine_as_test(
            LostUpdates,
            settings=settings(
                max_examples=12,
                stateful_step_count=12,
                deadline=None,
                derandomize=SEED is None,
                suppress_health_check=list(HealthCheck),
            ),
        )
