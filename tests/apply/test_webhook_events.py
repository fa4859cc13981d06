"""Webhooks announce the resource after the write, as the service stored it (documents 000 and
the API notes): its id, version and etag, not merely the spec we sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from tests.conftest import Org

MANIFEST = """\
apiVersion: reconciler.genesys.cloud/v1
kind: FunctionDefinition
metadata: {name: func-hooked}
spec:
  name: hooked
  description: Announced by webhook.
  timeoutMillis: 1000
  parameters: {type: object, properties: {q: {type: string}}}
"""


def test_a_webhook_carries_the_stored_resource_with_id_version_and_etag(
    org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: tuple[str, list[bytes]]
) -> None:
    url, received = webhook
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "fn.yaml").write_text(MANIFEST)
    (tmp_path / "reconciler.yaml").write_text(
        f"project: hooks\nmanifests: [manifests]\nwebhooks: [{{url: '{url}'}}]\n"
    )
    monkeypatch.chdir(tmp_path)
    for description in ("Announced by webhook.", "Announced again."):
        (tmp_path / "manifests" / "fn.yaml").write_text(
            MANIFEST.replace("Announced by webhook.", description)
        )
        result = CliRunner().invoke(main, ["apply", "--auto-approve"], env=org.environ())
        assert result.exit_code == 0, result.output
    events = [json.loads(body) for body in received]
    assert [e["event"] for e in events] == ["FUNCTION_DEFINITION_CREATED", "FUNCTION_DEFINITION_UPDATED"]
    live = org.api("GET", "/api/v2/ai/llm/function-definitions/func-hooked")
    last = events[-1]["data"]
    assert last["id"] == "func-hooked" and last["etag"] == live.headers["ETag"]
    assert last["version"] == live.json()["version"] == 2
    # What the service stored, server defaults included (a string parameter gets maxLength 255).
    assert last["spec"]["description"] == "Announced again."
    assert last["spec"]["parameters"]["properties"]["q"]["maxLength"] == 255


def test_without_webhooks_an_apply_opens_no_client_for_them(
    org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every httpx client builds an SSL context (20-45 ms: it reads the CA bundle). An apply with
    no webhook opens one client, the one that talks to the org."""
    import httpx

    opened: list[object] = []
    real_init = httpx.AsyncClient.__init__

    def counted(self: httpx.AsyncClient, *args: object, **kwargs: object) -> None:
        opened.append(kwargs.get("base_url"))
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "fn.yaml").write_text(MANIFEST)
    (tmp_path / "reconciler.yaml").write_text("project: quiet\nmanifests: [manifests]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(httpx.AsyncClient, "__init__", counted)
    result = CliRunner().invoke(main, ["apply", "--auto-approve"], env=org.environ())
    assert result.exit_code == 0, result.output
    assert opened == [org.base_url]
