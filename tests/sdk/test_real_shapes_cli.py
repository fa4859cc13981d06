"""The product against an emulator serving the platform's shapes only gives the results it gives
against the default emulator: what a user pointing it at a real org gets.

The example project is planned and rendered through the CLI against both emulators. Its
committed flow samples are removed, so the flow inputs come from the live flow: its
``inputSchema`` alone when real only. The one difference is stated, not hidden: the platform's
conversation carries no transcript, so a render by conversation id has no history there.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reconciler.cli import main
from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.server import running_emulator
from reconciler.kinds import flow_inputs_from
from reconciler.prompting import inspect_attributes
from tests.conftest import Org
from tests.test_hostile_arguments import REPO, project_file

RENDER = [
    "render",
    "billing-assistant",
    "--conversation-id",
    "conv-1001",
    "--attributes",
    "manifests/samples/attributes-billing.json",
]
HISTORY_LINE = re.compile(r"^- (system|customer|agent): ", re.MULTILINE)


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[bool, str]]:
    """The default emulator (False) and the real-shapes-only one (True)."""
    configs = {
        real: EmulatorConfig(db=":memory:", rate_limit_per_minute=100_000, seed=1, real_shapes_only=real)
        for real in (False, True)
    }
    with running_emulator(configs[False]) as default, running_emulator(configs[True]) as real_only:
        yield {False: default, True: real_only}


def project(root: Path, url: str) -> Path:
    """The example project on ``url``, without its committed flow samples."""
    shutil.copytree(REPO / "manifests", root / "manifests")
    shutil.rmtree(root / "manifests" / "samples" / "flows")
    (root / "reconciler.yaml").write_text(project_file(url), encoding="utf-8")
    return root


def invoke(root: Path, url: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> Result:
    monkeypatch.chdir(root)
    env = {**Org(url).environ(), "RECONCILER_ENV": "test", "RECONCILER_PARALLELISM": "4"}
    result = CliRunner().invoke(main, args, env=env)
    assert "Traceback" not in result.output, result.output
    return result


def output(result: Result, url: str) -> str:
    """The command's output with the emulator's address (each run has its own port) named."""
    return result.output.replace(url, "<emulator>")


def both(
    tmp_path: Path, urls: dict[bool, str], args: list[str], monkeypatch: pytest.MonkeyPatch
) -> dict[bool, Result]:
    return {
        real: invoke(project(tmp_path / str(real), url), url, args, monkeypatch) for real, url in urls.items()
    }


@pytest.mark.parametrize("plan_format", ["text", "json"])
def test_a_plan_is_the_same_against_real_shapes_only(
    tmp_path: Path, urls: dict[bool, str], monkeypatch: pytest.MonkeyPatch, plan_format: str
) -> None:
    results = both(tmp_path, urls, ["plan", "--format", plan_format], monkeypatch)
    assert results[False].exit_code == 0, results[False].output
    assert results[True].exit_code == 0, results[True].output
    assert output(results[True], urls[True]) == output(results[False], urls[False])
    assert "7 to create" in results[False].output or '"action": "create"' in results[False].output


def test_a_flow_input_mismatch_is_caught_the_same_against_real_shapes_only(
    tmp_path: Path, urls: dict[bool, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live check reads the flow's inputs: from inputSchema alone when real only."""
    results = {}
    for real, url in urls.items():
        root = project(tmp_path / str(real), url)
        policy = root / "manifests" / "policies" / "billing.yaml"
        text = policy.read_text(encoding="utf-8")
        wrong = "attribute: isVip, dataType: string"
        policy.write_text(text.replace("attribute: isVip, dataType: boolean", wrong), encoding="utf-8")
        results[real] = invoke(root, url, ["plan"], monkeypatch)
    assert results[False].exit_code != 0
    assert "isVip" in results[False].output and "boolean" in results[False].output
    assert results[True].exit_code == results[False].exit_code
    assert output(results[True], urls[True]) == output(results[False], urls[False])


def test_attribute_inspection_against_the_live_flow_is_the_same(
    tmp_path: Path, urls: dict[bool, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [
        "render",
        "billing-assistant",
        "--inspect-attributes",
        "--attributes",
        "manifests/samples/attributes-billing.json",
        "--format",
        "json",
    ]
    results = both(tmp_path, urls, args, monkeypatch)
    assert results[False].exit_code == 0, results[False].output
    report = json.loads(results[False].output)
    assert report["inputs"] == {
        "customerTier": "string",
        "accountBalance": "number",
        "isVip": "boolean",
        "lastPaymentDate": "date",
    }
    # The same report as from the committed sample (the documents' inputDefinitions list).
    samples = REPO / "manifests" / "samples"
    committed = flow_inputs_from(json.loads((samples / "flows" / "flow-billing-intake.json").read_text()))
    attributes = json.loads((samples / "attributes-billing.json").read_text())
    assert report == inspect_attributes(attributes, committed).to_json()
    assert output(results[True], urls[True]) == output(results[False], urls[False])


def test_a_render_by_conversation_id_is_the_same_but_for_the_transcript(
    tmp_path: Path, urls: dict[bool, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = both(tmp_path, urls, [*RENDER, "--format", "json"], monkeypatch)
    assert results[False].exit_code == 0, results[False].output
    assert results[True].exit_code == 0, results[True].output
    default, real_only = (json.loads(results[r].output) for r in (False, True))
    # Metadata (queue from the ACD participant's queueName), typed attributes, the template:
    # everything but the transcript, which the platform's conversation does not carry.
    assert "gold customer in the Billing queue" in real_only["prompt"]
    assert len(HISTORY_LINE.findall(default["prompt"])) == 11
    assert HISTORY_LINE.findall(real_only["prompt"]) == []
    without_history = "\n".join(
        line for line in default["prompt"].split("\n") if not HISTORY_LINE.match(line)
    )
    assert real_only["prompt"] == without_history
    assert real_only["tokens"]["history"] == 0 < default["tokens"]["history"]
