"""The command table: each command is imported when it runs, and the table names them all."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli import COMMANDS, main

CLI = Path(__file__).resolve().parents[1] / "reconciler" / "cli"


def test_the_table_names_every_command_and_the_module_that_registers_it() -> None:
    for module in sorted(p.stem for p in CLI.glob("*.py") if not p.stem.startswith("_")):
        importlib.import_module(f"reconciler.cli.{module}")  # every module, as help would
    assert set(main.commands) == set(COMMANDS)
    for name, module in COMMANDS.items():
        assert main.commands[name].callback.__module__ == f"reconciler.cli.{module}", name


def test_help_lists_every_command() -> None:
    shown = CliRunner().invoke(main, ["--help"]).output
    listed = shown.split("Commands:", 1)[1].split()
    assert all(name in listed for name in COMMANDS), shown


def test_a_plan_does_not_import_what_only_apply_needs() -> None:
    code = (
        "import sys, click\nfrom reconciler.cli import main\n"
        "assert main.get_command(click.Context(main), 'plan') is not None\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('reconciler'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert "reconciler.cli.plan" in loaded
    for heavy in ("reconciler.cli.apply", "reconciler.apply", "reconciler.health", "reconciler.emulator"):
        assert heavy not in loaded
