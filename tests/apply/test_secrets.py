"""Canaries: a planted client secret, webhook secret and sensitive field value appear in no
output, saved plan, journal or log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.emulator.config import ALL_SCOPES, EmulatorConfig
from reconciler.emulator.server import free_port, running_emulator

CLIENT_SECRET = "CANARY-client-secret-7f3a9"
WEBHOOK_SECRET = "CANARY-webhook-secret-b21c"
SENSITIVE_PATTERN = r"CANARY-pattern-\d{6}"

PROJECT = """\
project: canary
manifests: [manifests]
webhooks:
  - {{url: "http://127.0.0.1:{port}/hook", secretEnv: HOOK_SECRET, timeoutSeconds: 0.5}}
sensitive:
  - {{kind: ContextPolicy, jsonPointers: [/piiMasking/*/pattern]}}
"""
MANIFEST = f"""\
apiVersion: reconciler.genesys.cloud/v1
kind: ContextPolicy
metadata: {{name: policy-canary}}
spec:
  modelId: genesys-llm-v4
  tokenLimits: {{hardLimit: 8000, softLimit: 4000}}
  piiMasking:
    - {{name: secret-ids, pattern: '{SENSITIVE_PATTERN}', replacement: '[ID]'}}
"""


def test_canaries_never_leak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reconciler.yaml").write_text(PROJECT.format(port=free_port()))
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "policy.yaml").write_text(MANIFEST)
    config = EmulatorConfig(
        clients={"canary-client": (CLIENT_SECRET, ALL_SCOPES)}, rate_limit_per_minute=10_000
    )
    with running_emulator(config) as url:
        env = {
            "GENESYS_BASE_URL": url,
            "GENESYS_CLIENT_ID": "canary-client",
            "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
            "HOOK_SECRET": WEBHOOK_SECRET,
        }
        outputs = []
        for args in (
            ["plan", "-o", "plan.json"],
            ["plan", "--format", "json"],
            ["plan", "--format", "markdown"],
            ["apply", "plan.json"],
            ["drift", "--format", "json"],
            ["journal", "list"],
        ):
            result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
            outputs.append(result.output)
            assert result.exit_code in (0, 2), (args, result.output)
        # Edit the policy so the next plan shows a diff of the sensitive field itself.
        (tmp_path / "manifests" / "policy.yaml").write_text(MANIFEST.replace("pattern-", "pattern-x-"))
        for args in (["plan"], ["plan", "--format", "markdown"], ["apply", "--auto-approve"]):
            outputs.append(CliRunner().invoke(main, args, env=env, catch_exceptions=False).output)
    everything = "\n".join(outputs) + (tmp_path / "plan.json").read_text() + caplog.text
    everything += (tmp_path / ".reconciler" / "journal.jsonl").read_text()
    assert "(sensitive, sha256:" in everything  # the field is shown, as a hash
    assert "notification" in (tmp_path / ".reconciler" / "journal.jsonl").read_text()  # the webhook was tried
    for canary in (CLIENT_SECRET, WEBHOOK_SECRET, "CANARY-pattern"):
        assert canary not in everything, canary
