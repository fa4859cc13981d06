"""Options every command shares: NO_COLOR as no-color.org defines it."""

from __future__ import annotations

import io
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
