"""Every command given hostile arguments and files: a clear message and a non-zero exit code,
never a Python traceback (every user mistake goes through the CLI's one error handler)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.server import running_emulator
from tests.conftest import Org

REPO = Path(__file__).resolve().parents[1]
IGNORE_RELATIVE = "ignoreDifferences:\n  - {kind: Prompt, jsonPointers: [template]}\n"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """One real emulator for the module (the org fixture's is per test)."""
    with running_emulator(EmulatorConfig(db=":memory:", rate_limit_per_minute=100_000, seed=1)) as url:
        yield url


def project_file(url: str, extra: str = "") -> str:
    """reconciler.yaml for the example manifests, with an environment `test` on the emulator."""
    return (
        "project: hostile\nmanifests: [manifests]\n"
        "environments:\n"
        f"  test:\n    baseUrl: {url}\n"
        "    credentials: {clientIdEnv: GENESYS_CLIENT_ID, clientSecretEnv: GENESYS_CLIENT_SECRET}\n"
        "    variables: {team: cx, supportEmail: help@example.com}\n" + extra
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, url: str) -> Path:
    """The example project, planned against the emulator."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "manifests", root / "manifests")
    (root / "reconciler.yaml").write_text(project_file(url), encoding="utf-8")
    (root / "not-a-plan.json").write_text('{"format_version": "1.0", "changes": [{"action": 7}]}')
    (root / "garbage.json").write_bytes(b"\xff\xfe not json")
    (root / "deep.yaml").write_text("a: " + "[" * 30_000 + "]" * 30_000 + "\n")
    flows = root / "manifests" / "samples" / "flows"
    flows.mkdir(parents=True, exist_ok=True)
    (flows / "broken-flow.json").write_text('[{"dataType": 5}, "x"]')
    return root


@pytest.fixture(scope="module")
def env(url: str) -> dict[str, str]:
    return {**Org(url).environ(), "RECONCILER_ENV": "test", "RECONCILER_PARALLELISM": "4"}


CASES: list[tuple[str, list[str], str]] = [
    ("target without a kind", ["plan", "--target", "func-weather-v1"], "expected KIND/NAME"),
    ("exclude without a kind", ["apply", "--exclude", "bad", "--auto-approve"], "expected KIND/NAME"),
    ("unknown kind", ["plan", "--target", "Widget/x"], "unknown kind 'Widget'"),
    ("target naming nothing", ["plan", "--target", "FunctionDefinition/nope"], "no such resource"),
    ("exclude naming nothing", ["plan", "--exclude", "prompt/nope"], "no such resource"),
    ("plan file with a wrong shape", ["apply", "not-a-plan.json", "--auto-approve"], "malformed plan"),
    ("plan file that is not JSON", ["apply", "garbage.json", "--auto-approve"], "not a reconciler plan"),
    ("plan file that does not exist", ["apply", "nowhere.json", "--auto-approve"], "nowhere.json"),
    ("manifest nested 30,000 deep", ["validate", "deep.yaml"], "64 levels"),
    ("render an unknown prompt", ["render", "nope", "--conversation", "x.json"], "no Prompt named 'nope'"),
    ("render an unknown prompt, nothing else", ["render", "nope"], "no Prompt named 'nope'"),
    ("unknown journal run", ["journal", "show", "no-such-run"], "no-such-run"),
    ("rollback of an unknown run", ["rollback", "no-such-run", "--auto-approve"], "no-such-run"),
    ("parallelism out of range", ["plan", "--parallelism", "0"], "parallelism"),
    ("unknown output format", ["drift", "--format", "yaml"], "yaml"),
]


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_arguments_get_a_message_not_a_traceback(
    project: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert message in result.output, result.output


@pytest.mark.parametrize("command", [["validate"], ["plan"]])
def test_a_relative_ignore_pointer_is_a_located_problem(
    project: Path, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """validate accepted it and plan died with a traceback; now both report it with file:line."""
    shutil.copytree(project / "manifests", tmp_path / "manifests")
    (tmp_path / "reconciler.yaml").write_text(project_file(env["GENESYS_BASE_URL"], IGNORE_RELATIVE))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, command, env=env)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "reconciler.yaml:9:" in result.output and "must start with '/'" in result.output


def test_a_malformed_flow_sample_in_a_preview_is_reported(
    project: Path, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PR preview whose sample flow file is malformed says so in the preview; plan goes on."""
    shutil.copytree(project / "manifests", tmp_path / "manifests")
    (tmp_path / "reconciler.yaml").write_text(project_file(env["GENESYS_BASE_URL"]))
    policies = list((tmp_path / "manifests" / "policies").glob("*.yaml"))
    flow_ids = [
        line.split(":", 1)[1].strip()
        for p in policies
        for line in p.read_text().splitlines()
        if line.strip().startswith("flowId:")
    ]
    assert flow_ids, "the example policies name a flow"
    flows = tmp_path / "manifests" / "samples" / "flows"
    for flow_id in flow_ids:
        (flows / f"{flow_id}.json").write_text(json.dumps([{"dataType": 5}, "x"]))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["plan", "--format", "markdown"], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == 0, result.output
    assert "preview unavailable" in result.output and "needs a name" in result.output
