"""Schemathesis against the emulator's own OpenAPI document, in-process and bounded: no 5xx,
and every response conforms to the document (status codes and bodies)."""

from __future__ import annotations

import asyncio
import base64

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from reconciler.emulator.app import create_app
from reconciler.emulator.config import EmulatorConfig

APP = create_app(EmulatorConfig(rate_limit_per_minute=1_000_000, seed=1))
_basic = base64.b64encode(b"emulator-client:emulator-secret").decode()


async def _token() -> str:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://emulator") as http:
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("emulator-client", "emulator-secret"),
        )
        return str(response.json()["access_token"])


TOKEN = asyncio.run(_token())
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_emulator_conforms_to_its_openapi(case: schemathesis.Case) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if case.path == "/oauth/token":
        headers = {"Authorization": f"Basic {_basic}"}
    response = case.call(headers=headers)
    case.validate_response(
        response,
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        headers=headers,
    )
