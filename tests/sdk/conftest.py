"""The official Genesys Cloud Python SDK (``purecloudplatformclientv2``, generated from the
platform's own API definition) as a client of the emulator: a client no one here wrote.

Two emulators on loopback for the package: the default one (the platform's shapes with the
documents' variants beside them) and one serving the platform's shapes only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import PureCloudPlatformClientV2 as sdk
import pytest

from reconciler.emulator.config import EmulatorConfig, Traffic
from reconciler.emulator.server import running_emulator
from tests.conftest import CLIENT_ID, CLIENT_SECRET

# Enough synthetic calls that a fraction of a second of traffic fills a query's page.
CALLS_PER_SECOND = 200.0
PROMPT = {
    "name": "sdk-probe",
    "version": "1.0.0",
    "template": "Answer briefly.",
    "variables": [],
    "modelId": "genesys-llm-v4",
    "maxTokens": 1000,
}


def _config(real_shapes_only: bool) -> EmulatorConfig:
    return EmulatorConfig(
        db=":memory:",
        rate_limit_per_minute=100_000,
        seed=7,
        real_shapes_only=real_shapes_only,
        traffic=Traffic(calls_per_second=CALLS_PER_SECOND),
    )


@pytest.fixture(scope="package", params=[False, True], ids=["default", "real-shapes-only"])
def emulator(request: pytest.FixtureRequest) -> Iterator[tuple[str, bool]]:
    """(base URL, real_shapes_only) of each emulator, with one live prompt receiving traffic."""
    real_only = bool(request.param)
    with running_emulator(_config(real_only)) as url:
        created = httpx.post(
            f"{url}/api/v2/ai/llm/prompts",
            json=PROMPT,
            headers={"Authorization": f"Bearer {token(url)}"},
            timeout=10,
        )
        created.raise_for_status()
        yield url, real_only


def token(url: str) -> str:
    response = httpx.post(
        f"{url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def login(url: str, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> Any:
    """The SDK's client-credentials login, its host pointed at the emulator."""
    return sdk.ApiClient(host=url).get_client_credentials_token(client_id, secret)


def raw_body(api: Any) -> Any:
    """The JSON the SDK's last successful call received, before its models saw it."""
    return json.loads(api.last_response.data)


class _Response:
    """What ``ApiClient.deserialize`` needs of a response: its data and content type."""

    def __init__(self, data: str) -> None:
        self.data = data

    def getheader(self, name: str) -> str:
        return "application/json"


def error_body(api: Any, body: bytes | str) -> Any:
    """An error answer's body (an ``ApiException``'s) parsed by the SDK into its ``ErrorBody``."""
    return api.deserialize(_Response(body.decode() if isinstance(body, bytes) else body), "ErrorBody")


def model_fields(model: str) -> set[str]:
    """The JSON field names of one of the SDK's models (its attribute map's values)."""
    return set(getattr(sdk, model)().attribute_map.values())
