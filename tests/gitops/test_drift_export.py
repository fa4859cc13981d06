"""drift classification and the export -> plan round trip, against a real emulator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from tests.conftest import Org

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def example(org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repository's example project with a `test` environment at the emulator."""
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    project = (
        (REPO / "reconciler.yaml")
        .read_text()
        .replace(
            "environments:\n",
            f"""environments:
  test:
    baseUrl: {org.base_url}
    variables: {{team: qa, supportEmail: qa@example.com}}
""",
            1,
        )
    )
    (tmp_path / "reconciler.yaml").write_text(project)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(org: Org, *args: str) -> tuple[int, str]:
    env = {**org.environ(), "RECONCILER_ENV": "test"}
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout


def test_drift_classifies_each_kind_of_difference(org: Org, example: Path) -> None:
    assert cli(org, "apply", "--auto-approve")[0] == 0
    assert cli(org, "drift")[0] == 0
    # changed outside git
    live = org.api("GET", "/api/v2/ai/llm/function-definitions/func-weather-v1")
    org.api(
        "PUT",
        "/api/v2/ai/llm/function-definitions/func-weather-v1",
        {**live.json(), "timeoutMillis": 9999},
        {"If-Match": live.headers["ETag"]},
    )
    # missing live
    policy = org.api("GET", "/api/v2/ai/llm/context-policies/policy-orders")
    org.api(
        "DELETE",
        "/api/v2/ai/llm/context-policies/policy-orders",
        headers={"If-Match": policy.headers["ETag"]},
    )
    # unmanaged extra: labelled as ours, not in git
    extra = {
        "id": "func-extra",
        "name": "extra",
        "description": "x",
        "timeoutMillis": 10,
        "parameters": {"type": "object", "properties": {}},
        "labels": {"reconciler.genesys.cloud/managed-by": "contact-center-ai"},
    }
    org.api("PUT", "/api/v2/ai/llm/function-definitions/func-extra", extra)
    # a resource nobody manages is not drift
    org.api(
        "PUT", "/api/v2/ai/llm/function-definitions/func-theirs", {**extra, "id": "func-theirs", "labels": {}}
    )
    before = org.admin("GET", "stats")["requests"]
    code, out = cli(org, "drift", "--format", "json")
    assert code == 2
    found = {(d["kind"], d["name"]): d for d in json.loads(out)["drift"]}
    assert found[("FunctionDefinition", "func-weather-v1")]["class"] == "changed outside git"
    assert "/spec/timeoutMillis" in found[("FunctionDefinition", "func-weather-v1")]["fields"]
    assert found[("FunctionDefinition", "func-weather-v1")]["modified_by"] == "emulator-client"
    assert found[("ContextPolicy", "policy-orders")]["class"] == "missing live"
    assert found[("FunctionDefinition", "func-extra")]["class"] == "unmanaged extra"
    assert ("FunctionDefinition", "func-theirs") not in found
    after = org.admin("GET", "stats")["requests"]
    writes = {k: v - before.get(k, 0) for k, v in after.items() if not k.startswith("GET")}
    assert not any(writes.values()), writes  # drift never writes
    code, markdown = cli(org, "drift", "--format", "markdown")
    assert code == 2 and "unmanaged extra" in markdown


def test_export_then_plan_shows_no_changes(org: Org, example: Path, tmp_path: Path) -> None:
    assert cli(org, "apply", "--auto-approve")[0] == 0
    handmade = {
        "id": "func-handmade",
        "name": "handmade",
        "description": "Made in the UI.",
        "timeoutMillis": 1500,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    assert org.api("PUT", "/api/v2/ai/llm/function-definitions/func-handmade", handmade).status_code == 201
    code, out = cli(org, "export", "--out", "exported")
    assert code == 0, out
    assert (tmp_path / "exported" / "functions" / "func-handmade.yaml").exists()
    exported = (tmp_path / "exported" / "functions" / "func-handmade.yaml").read_text()
    assert "maxLength" not in exported  # the server default is left out
    assert "reconciler.genesys.cloud/adopt" in exported  # not ours yet: not adopted silently
    # An editor finds the schema from wherever --out put the file, and templates read as blocks.
    modeline = exported.splitlines()[0].split("$schema=", 1)[1]
    assert (tmp_path / "exported" / "functions" / modeline).resolve() == (
        tmp_path / "schemas" / "functiondefinition.schema.json"
    ).resolve()
    prompt = (tmp_path / "exported" / "prompts" / "billing-assistant.yaml").read_text()
    assert "  template: |" in prompt or "  template: |-" in prompt, prompt
    assert cli(org, "validate", "exported")[0] == 0
    # Export is journaled like every operation on an org (document 000's EXPORT audit event).
    code, listing = cli(org, "journal", "list")
    assert code == 0 and "export" in listing and "exported" in listing, listing
    code, out = cli(org, "plan", "exported", "--detailed-exitcode")
    assert code == 0, out
    # --adopt: the next apply labels the hand-made resource as managed.
    shutil.rmtree(tmp_path / "exported")
    assert cli(org, "export", "--out", "exported", "--adopt")[0] == 0
    code, out = cli(org, "plan", "exported", "--format", "json")
    changes = [c for c in json.loads(out)["changes"] if c["action"] != "no-op"]
    assert [(c["name"], c["action"]) for c in changes] == [("func-handmade", "update")]


@pytest.mark.parametrize("command", ["plan", "drift", "apply"])
def test_bad_manifests_are_reported_even_when_the_org_cannot_be_reached(
    org: Org, example: Path, command: str
) -> None:
    # plan, drift and apply (with a local journal) list the org while the manifests load; the
    # manifests' problems still come first, named by file and line, and the listing (which
    # cannot connect) is not reported.
    from reconciler.emulator.server import free_port

    project = example / "reconciler.yaml"
    project.write_text(project.read_text().replace(org.base_url, f"http://127.0.0.1:{free_port()}"))
    broken = example / "manifests" / "functions" / "currency.yaml"
    broken.write_text(broken.read_text().replace("timeoutMillis: 2000", "timeoutMillis: -5"))
    result = CliRunner().invoke(main, [command], env={**org.environ(), "RECONCILER_ENV": "test"})
    assert result.exit_code == 1, result.output
    assert "currency.yaml:10" in result.output and "timeoutMillis" in result.output, result.output
    assert "connect" not in result.output.lower(), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_plan_and_drift_agree_after_loading_while_listing(org: Org, example: Path) -> None:
    # The listing made while the manifests load is the one the plan and the drift report use.
    assert cli(org, "apply", "--auto-approve")[0] == 0
    out = org.api("GET", "/api/v2/ai/llm/function-definitions/func-currency-convert").json()
    out["description"] = "Changed in the UI."
    headers = {"If-Match": out["etag"]}
    assert org.api("PUT", f"/api/v2/ai/llm/function-definitions/{out['id']}", out, headers).status_code == 200
    code, plan_out = cli(org, "plan", "--detailed-exitcode")
    assert code == 2 and "func-currency-convert" in plan_out, plan_out
    code, drift_out = cli(org, "drift")
    assert code == 2 and "func-currency-convert" in drift_out, drift_out
