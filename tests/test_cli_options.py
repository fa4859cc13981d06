"""Options every command shares: NO_COLOR as no-color.org defines it."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.cli.options import use_color
from tests.conftest import Org, write_project

FUNCTION = """\
apiVersion: reconciler.genesys.cloud/v1
kind: FunctionDefinition
metadata: {name: func-a}
spec: {name: a, description: A., timeoutMillis: 1000, parameters: {type: object, properties: {}}}
"""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("value", "colored"), [(None, True), ("", True), ("0", False), ("x", False), ("1", False)]
)
def test_no_color_is_any_non_empty_value(
    monkeypatch: pytest.MonkeyPatch, value: str | None, colored: bool
) -> None:
    monkeypatch.setattr(sys, "stdout", Terminal())
    if value is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", value)
    assert use_color(no_color=False) is colored
    assert use_color(no_color=True) is False


def test_no_color_is_never_a_usage_error(org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`NO_COLOR=x` was refused as "not a valid boolean"."""
    monkeypatch.chdir(write_project(tmp_path, FUNCTION))
    result = CliRunner().invoke(main, ["plan"], env={**org.environ(), "NO_COLOR": "x"})
    assert result.exit_code == 0, result.output
    assert "+ FunctionDefinition/func-a" in result.output and "\x1b[" not in result.output


def test_shell_completion_offers_environments_and_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the example project

    def complete(words: str) -> list[str]:
        env = {
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
            "_RECONCILER_COMPLETE": "bash_complete",
        }
        result = CliRunner().invoke(main, [], env=env, prog_name="reconciler")
        return [line.split(",", 1)[1] for line in result.output.splitlines() if "," in line]

    assert complete("reconciler plan --env ") == ["local", "prod", "staging"]
    assert complete("reconciler apply --target Prompt/b") == ["Prompt/billing-assistant"]
    assert "apply" in complete("reconciler ap")


def test_var_gives_variables_without_a_project_environment(
    org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With GENESYS_BASE_URL and no project environment, --var is how ${team} gets a value."""
    import shutil

    shutil.copytree(Path(__file__).resolve().parents[1] / "manifests", tmp_path / "manifests")
    (tmp_path / "reconciler.yaml").write_text("project: vars\nmanifests: [manifests]\n")
    monkeypatch.chdir(tmp_path)
    without = CliRunner().invoke(main, ["plan"], env=org.environ())
    assert without.exit_code == 1 and "undefined variable ${team}" in without.output, without.output
    given = ["--var", "team=cx", "--var", "supportEmail=help@example.com"]
    result = CliRunner().invoke(main, ["plan", *given], env=org.environ())
    assert result.exit_code == 0, result.output
    assert '"team": "cx"' in result.output, result.output
    bad = CliRunner().invoke(main, ["plan", "--var", "no-equals"], env=org.environ())
    assert bad.exit_code == 2 and "expected NAME=VALUE" in bad.output


def test_apply_takes_a_plan_by_content_and_reports_json(
    org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plan -o myplan` then `apply myplan` (no .json) applies the plan; --format json gives one
    object per change with its outcome; -v traces HTTP; --quiet keeps stderr to results."""
    monkeypatch.chdir(write_project(tmp_path, FUNCTION))
    assert CliRunner().invoke(main, ["plan", "-o", "myplan"], env=org.environ()).exit_code == 0
    result = CliRunner().invoke(main, ["-v", "apply", "myplan", "--format", "json"], env=org.environ())
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["exit_code"] == 0 and document["run_id"] and document["command"] == "apply"
    assert [(c["name"], c["action"], c["status"]) for c in document["changes"]] == [
        ("func-a", "create", "applied")
    ]
    assert "http: PUT /api/v2/ai/llm/function-definitions/func-a -> 201" in result.stderr
    assert "Authorization" not in result.stderr and "Bearer" not in result.stderr
    quiet = CliRunner().invoke(main, ["--quiet", "plan"], env=org.environ())
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
    assert "No changes" in quiet.stdout


def test_commands_work_from_any_folder_of_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reconciler.yaml is found in a parent folder, as git finds its repository; the embedded
    emulator's state stays in the project's .reconciler/, and no folder gets an empty one."""
    import shutil

    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "manifests", tmp_path / "manifests")
    shutil.copy(repo / "reconciler.yaml", tmp_path / "reconciler.yaml")
    monkeypatch.chdir(tmp_path / "manifests" / "functions")
    for command in (["validate"], ["plan"], ["journal", "list"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, (command, result.output)
    assert not (tmp_path / "manifests" / "functions" / ".reconciler").exists()
    assert (tmp_path / ".reconciler" / "emulator.db").exists()
    monkeypatch.chdir(tmp_path.parent)
    result = CliRunner().invoke(main, ["--chdir", str(tmp_path), "validate"])
    assert result.exit_code == 0 and "7 manifests valid" in result.output, result.output


def test_a_command_result_is_never_formatted_by_asyncio() -> None:
    # CPython's asyncio.run formats the finished main task, result included, when it restores the
    # SIGINT handler: a whole plan's repr took 0.4 s and 50 MB at 10k resources. run() keeps the
    # result out of the task.
    from reconciler.cli.options import run

    formatted = []

    class Large:
        def __repr__(self) -> str:
            formatted.append(1)
            return "Large()"

    async def body() -> Large:
        return Large()

    result = run(body())
    assert isinstance(result, Large)
    assert formatted == []


def test_collections_are_deferred_while_building_and_restored_after() -> None:
    import gc

    from reconciler.cli.options import collections_deferred

    before = gc.get_threshold()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collections_deferred():
        assert not gc.isenabled()
        raise RuntimeError("a failing command")
    assert gc.isenabled() and gc.get_threshold() == before  # restored even when the command failed
    gc.disable()
    try:
        with collections_deferred():
            pass
        assert not gc.isenabled()  # as it was
    finally:
        gc.enable()
