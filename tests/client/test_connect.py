"""Which org a command talks to: explicit beats ambient, and secrets come only from the environment."""

from __future__ import annotations

import pytest

from reconciler.client.connect import resolve
from reconciler.errors import ConfigError
from reconciler.models import Environment, ProjectConfig

PROJECT = ProjectConfig(
    environments={
        "local": Environment(embedded=True, variables={"team": "demo"}),
        "staging": Environment(region="eu-west-1"),
        "custom": Environment(base_url="http://127.0.0.1:9999/"),
    }
)


def test_nothing_set_means_embedded_emulator() -> None:
    connection = resolve(PROJECT, None, {})
    assert connection.embedded_db is not None


def test_named_embedded_environment_keeps_its_variables() -> None:
    connection = resolve(PROJECT, "local", {})
    assert connection.embedded_db is not None and connection.variables == {"team": "demo"}


def test_region_maps_to_api_and_login_hosts() -> None:
    env = {"GENESYS_CLIENT_ID": "id", "GENESYS_CLIENT_SECRET": "s3cret"}
    connection = resolve(PROJECT, "staging", env)
    assert connection.base_url == "https://api.mypurecloud.ie"
    assert connection.login_url == "https://login.mypurecloud.ie"
    assert "s3cret" not in repr(connection)


def test_base_url_overrides_region_and_env_var_selects_environment() -> None:
    env = {"RECONCILER_ENV": "custom", "GENESYS_CLIENT_ID": "id", "GENESYS_CLIENT_SECRET": "s"}
    assert resolve(PROJECT, None, env).base_url == "http://127.0.0.1:9999"


def test_missing_credentials_name_the_variables() -> None:
    with pytest.raises(ConfigError, match="GENESYS_CLIENT_SECRET"):
        resolve(PROJECT, "staging", {"GENESYS_CLIENT_ID": "id"})


def test_unknown_environment_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="custom, local, staging"):
        resolve(PROJECT, "qa", {})


def test_plain_environment_variables_without_project() -> None:
    env = {"GENESYS_BASE_URL": "http://127.0.0.1:1", "GENESYS_CLIENT_ID": "i", "GENESYS_CLIENT_SECRET": "s"}
    connection = resolve(ProjectConfig(), None, env)
    assert connection.base_url == "http://127.0.0.1:1" and connection.embedded_db is None


def test_a_base_url_can_log_in_elsewhere() -> None:
    """Real orgs log in at login.<domain>, not <baseUrl>/oauth/token: a login URL is honoured."""
    env = {
        "GENESYS_BASE_URL": "https://api.example.test",
        "GENESYS_LOGIN_URL": "https://login.example.test/",
        "GENESYS_CLIENT_ID": "i",
        "GENESYS_CLIENT_SECRET": "s",
    }
    connection = resolve(ProjectConfig(), None, env)
    assert connection.login_url == "https://login.example.test"
    project = ProjectConfig(
        environments={
            "o": Environment(base_url="https://api.example.test", login_url="https://login.example.test")
        }
    )
    assert resolve(project, "o", env).login_url == "https://login.example.test"
    assert resolve(PROJECT, "custom", env).login_url == "http://127.0.0.1:9999"  # none given: the base URL


def test_tokens_come_from_the_login_url_over_http() -> None:
    """Two emulators: the API of one, the login of the other; the token request goes to the
    login one (which counts it), not to <baseUrl>/oauth/token."""
    import asyncio

    from reconciler.client.connect import open_client
    from reconciler.emulator.config import EmulatorConfig
    from reconciler.emulator.server import running_emulator
    from reconciler.errors import AuthError
    from tests.conftest import Org

    with (
        running_emulator(EmulatorConfig(db=":memory:")) as api,
        running_emulator(EmulatorConfig(db=":memory:")) as login,
    ):
        env = {
            "GENESYS_BASE_URL": api,
            "GENESYS_LOGIN_URL": login,
            "GENESYS_CLIENT_ID": "emulator-client",
            "GENESYS_CLIENT_SECRET": "emulator-secret",
        }
        connection = resolve(ProjectConfig(), None, env)
        before = Org(login).admin("GET", "stats")["tokens"], Org(api).admin("GET", "stats")["tokens"]

        async def listing() -> None:
            async with open_client(connection) as client:
                await client.live_state()

        with pytest.raises(AuthError):  # the API's org does not know the login org's token
            asyncio.run(listing())
        after = Org(login).admin("GET", "stats")["tokens"], Org(api).admin("GET", "stats")["tokens"]
        assert after[0] > before[0] and after[1] == before[1]
