"""apply end to end through the CLI against a real emulator on a loopback socket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.journal import verify
from tests.conftest import Org, write_project

MANIFESTS = """\
apiVersion: reconciler.genesys.cloud/v1
kind: FunctionDefinition
metadata: {name: func-weather}
spec:
  name: get_weather
  description: Current weather for a city.
  timeoutMillis: 3000
  parameters:
    type: object
    properties:
      city: {type: string, description: City name}
    required: [city]
---
apiVersion: reconciler.genesys.cloud/v1
kind: FunctionDefinition
metadata: {name: func-orders}
spec:
  name: order_status
  description: Status of an order.
  timeoutMillis: 3000
  parameters:
    type: object
    properties:
      orderId: {type: string}
---
apiVersion: reconciler.genesys.cloud/v1
kind: ContextPolicy
metadata: {name: policy-default}
spec:
  modelId: genesys-llm-v4
  tokenLimits: {hardLimit: 8000, softLimit: 6000}
---
apiVersion: reconciler.genesys.cloud/v1
kind: Prompt
metadata: {name: assistant}
spec:
  version: 1.0.0
  modelId: genesys-llm-v4
  maxTokens: 2000
  template: "Hello {{ name }}, how can I help?"
  variables: [{name: name, required: true}]
  functions: [func-weather]
  contextPolicy: policy-default
"""


def cli(org: Org, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=org.environ(), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(write_project(tmp_path, MANIFESTS))
    return tmp_path


def test_apply_then_plan_shows_no_changes(org: Org, project: Path) -> None:
    code, out = cli(org, "apply", "--auto-approve")
    assert code == 0, out
    assert "4 created" in out
    code, out = cli(org, "plan", "--detailed-exitcode")
    assert code == 0, out
    assert "No changes" in out
    assert len(org.listing("/api/v2/ai/llm/prompts")) == 1
    assert verify(project / ".reconciler" / "journal.jsonl").ok


def test_saved_plan_refused_when_manifests_changed(org: Org, project: Path) -> None:
    assert cli(org, "plan", "-o", "plan.json")[0] == 0
    manifest = project / "manifests" / "all.yaml"
    manifest.write_text(manifest.read_text().replace("Current weather", "The weather"))
    code, out = cli(org, "apply", "plan.json")
    assert code == 1 and "changed since" in out
    assert org.listing("/api/v2/ai/llm/function-definitions") == []


def test_conflict_is_reported_and_nothing_of_theirs_overwritten(org: Org, project: Path) -> None:
    assert cli(org, "apply", "--auto-approve")[0] == 0
    manifest = project / "manifests" / "all.yaml"
    manifest.write_text(
        manifest.read_text()
        .replace("Current weather", "Weather now")
        .replace("Status of an order.", "Where an order is.")
    )
    assert cli(org, "plan", "-o", "plan.json")[0] == 0
    # Someone edits func-weather in the UI after the plan was made.
    live = org.api("GET", "/api/v2/ai/llm/function-definitions/func-weather")
    edited = {**live.json(), "description": "Edited by a human"}
    assert (
        org.api(
            "PUT",
            "/api/v2/ai/llm/function-definitions/func-weather",
            edited,
            {"If-Match": live.headers["ETag"]},
        ).status_code
        == 200
    )
    code, out = cli(org, "apply", "plan.json")
    assert code == 3, out
    assert "conflict" in out.lower()
    after = org.api("GET", "/api/v2/ai/llm/function-definitions/func-weather").json()
    assert after["description"] == "Edited by a human"
    orders = org.api("GET", "/api/v2/ai/llm/function-definitions/func-orders").json()
    assert orders["description"] == "Where an order is."  # the independent change went through
    journal = (project / ".reconciler" / "journal.jsonl").read_text()
    assert '"status":"conflict"' in journal.replace(" ", "")


def test_rollback_restores_the_previous_state(org: Org, project: Path) -> None:
    assert cli(org, "apply", "--auto-approve")[0] == 0
    manifest = project / "manifests" / "all.yaml"
    original = manifest.read_text()
    manifest.write_text(original.replace("Hello {{ name }}", "Hi {{ name }}").replace("3000", "4000"))
    code, out = cli(org, "apply", "--auto-approve")
    assert code == 0, out
    runs = [line.split()[0] for line in cli(org, "journal", "list")[1].splitlines() if line.strip()]
    last_run = [r for r in runs if r[:2].isdigit()][-1]
    code, out = cli(org, "rollback", last_run, "--auto-approve")
    assert code == 0, out
    # What is approved is shown: each field and the template, as a plan shows an update.
    assert "~ /spec/timeoutMillis: 4000 -> 3000" in out, out
    assert "-Hi {{ name }}, how can I help?" in out and "+Hello {{ name }}, how can I help?" in out, out
    assert "rolled back" in out and "rollbackd" not in out, out
    manifest.write_text(original)
    code, out = cli(org, "plan", "--detailed-exitcode")
    assert code == 0, out


def test_rollback_of_a_resource_changed_since_is_a_conflict(org: Org, project: Path) -> None:
    code, out = cli(org, "apply", "--auto-approve")
    assert code == 0
    run_id = json.loads((project / ".reconciler" / "journal.jsonl").read_text().splitlines()[0])["run_id"]
    live = org.api("GET", "/api/v2/ai/llm/function-definitions/func-orders")
    assert (
        org.api(
            "PUT",
            "/api/v2/ai/llm/function-definitions/func-orders",
            {**live.json(), "description": "theirs"},
            {"If-Match": live.headers["ETag"]},
        ).status_code
        == 200
    )
    code, out = cli(org, "rollback", run_id, "--auto-approve")
    assert code == 3, out
    assert org.api("GET", "/api/v2/ai/llm/function-definitions/func-orders").json()["description"] == "theirs"


def test_invalid_manifest_writes_nothing(org: Org, project: Path) -> None:
    manifest = project / "manifests" / "all.yaml"
    manifest.write_text(manifest.read_text().replace("timeoutMillis: 3000", "timeoutMilis: 3000", 1))
    code, out = cli(org, "apply", "--auto-approve")
    assert code == 1
    assert "all.yaml:" in out and "timeoutMilis" in out
    assert "Traceback" not in out
    assert org.listing("/api/v2/ai/llm/function-definitions") == []
    journal = project / ".reconciler" / "journal.jsonl"
    assert not journal.exists() or journal.read_text() == ""  # no run was started


def test_prune_never_deletes_unlabelled_resources(org: Org, project: Path) -> None:
    theirs = {
        "id": "func-handmade",
        "name": "handmade",
        "description": "made by hand",
        "timeoutMillis": 1000,
        "parameters": {"type": "object", "properties": {}},
    }
    assert org.api("PUT", "/api/v2/ai/llm/function-definitions/func-handmade", theirs).status_code in (
        200,
        201,
    )
    assert cli(org, "apply", "--auto-approve")[0] == 0
    manifest = project / "manifests" / "all.yaml"
    text = manifest.read_text()
    manifest.write_text(
        text[
            : text.index(
                "---\napiVersion: reconciler.genesys.cloud/v1\nkind: FunctionDefinition\n"
                "metadata: {name: func-orders}"
            )
        ]
        + text[text.index("---\napiVersion: reconciler.genesys.cloud/v1\nkind: ContextPolicy") :]
    )
    code, out = cli(org, "apply", "--auto-approve", "--prune")
    assert code == 0, out
    ids = {f["id"] for f in org.listing("/api/v2/ai/llm/function-definitions")}
    assert ids == {"func-weather", "func-handmade"}


def test_no_terminal_and_no_auto_approve_refuses(org: Org, project: Path) -> None:
    code, out = cli(org, "apply")
    assert code == 1 and "--auto-approve" in out
    assert org.listing("/api/v2/ai/llm/function-definitions") == []


def test_prompt_rolls_back_to_a_server_side_revision(org: Org, project: Path) -> None:
    assert cli(org, "apply", "--auto-approve")[0] == 0
    manifest = project / "manifests" / "all.yaml"
    manifest.write_text(manifest.read_text().replace("how can I help?", "what do you need?"))
    assert cli(org, "apply", "--auto-approve")[0] == 0
    code, out = cli(org, "rollback", "--prompt", "assistant", "--revision", "1", "--auto-approve")
    assert code == 0, out
    # The approval shows the template going back, not only '< Prompt/assistant'.
    assert "-Hello {{ name }}, what do you need?" in out and "+Hello {{ name }}, how can I help?" in out, out
    [prompt] = org.listing("/api/v2/ai/llm/prompts")
    assert prompt["template"] == "Hello {{ name }}, how can I help?" and prompt["revision"] == 3
    code, out = cli(org, "rollback", "--prompt", "assistant", "--revision", "9", "--auto-approve")
    assert code == 1 and "no earlier revision 9" in out


def test_rollback_on_failure_undoes_what_the_run_changed(org: Org, project: Path) -> None:
    assert cli(org, "apply", "--auto-approve")[0] == 0
    manifest = project / "manifests" / "all.yaml"
    # The service refuses this prompt ({% with %} binds a name its template check does not know),
    # though it passes offline validation: a change that fails for good at apply time.
    refused = (
        "---\napiVersion: reconciler.genesys.cloud/v1\nkind: Prompt\nmetadata: {name: refused}\n"
        "spec: {version: 1.0.0, modelId: genesys-llm-v4, maxTokens: 500,\n"
        "  template: '{% with g = \"Hi\" %}{{ g }}{% endwith %}', functions: [func-orders]}\n"
    )
    manifest.write_text(manifest.read_text().replace("Status of an order.", "Where an order is.") + refused)
    code, out = cli(org, "apply", "--auto-approve", "--rollback-on-failure")
    assert code == 1, out
    assert "rolling back" in out
    assert org.api("GET", "/api/v2/ai/llm/function-definitions/func-orders").json()["description"] == (
        "Status of an order."
    )
    assert [p["name"] for p in org.listing("/api/v2/ai/llm/prompts")] == ["assistant"]


def test_a_removed_manifest_is_pointed_out_not_silently_kept(org: Org, project: Path) -> None:
    assert cli(org, "apply", "--auto-approve")[0] == 0
    manifest = project / "manifests" / "all.yaml"
    documents = manifest.read_text().split("---\n")
    manifest.write_text("---\n".join(d for d in documents if "func-orders" not in d))
    code, out = cli(org, "plan")
    assert code == 0, out
    assert "No changes" in out and "1 live resource(s) this project manages are no longer in git" in out, out
    assert "(FunctionDefinition/func-orders)" in out and "--prune" in out, out
    code, out = cli(org, "plan", "--prune")
    assert "- FunctionDefinition/func-orders" in out and "no longer in git" not in out, out
