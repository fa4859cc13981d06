"""HTTP by RFC 9110, OAuth edge cases and admin safety, over a real loopback socket.

HEAD, Allow, WWW-Authenticate, Location, strong/weak ETag comparison with lists and '*',
Cache-Control, 413 before the body is read (declared or streamed), malformed credentials,
unknown scopes, token eviction, and the admin token beyond loopback.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.server import is_loopback, make_server, running_emulator
from tests.conftest import Org
from tests.emulator.test_http_semantics import FN, PROMPTS, assert_genesys_error, function, prompt

MIB = 1024 * 1024


def auth(org: Org) -> dict[str, str]:
    return {"Authorization": f"Bearer {org.token()}"}


# --- HEAD, Allow, Location, Cache-Control --------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        FN,
        f"{FN}/func-0",
        "/api/v2/ai/llm/models",
        "/api/v2/ai/llm/models/genesys-llm-v4/capacity",
        "/api/v2/flows/flow-billing-intake",
        "/api/v2/conversations/conv-1001",
        PROMPTS,
    ],
)
def test_head_answers_like_get_without_a_body(org: Org, path: str) -> None:
    org.api("PUT", f"{FN}/func-0", function())
    get = org.api("GET", path)
    head = org.api("HEAD", path)
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers.get("ETag") == get.headers.get("ETag")
    assert head.headers["Cache-Control"] == "no-store"


def test_head_of_a_missing_resource_is_404_without_a_body(org: Org) -> None:
    head = org.api("HEAD", f"{FN}/nothing-here")
    assert head.status_code == 404 and head.content == b""


def test_405_names_the_allowed_methods(org: Org) -> None:
    response = httpx.post(f"{org.base_url}{FN}", headers=auth(org))
    assert_genesys_error(response, 405, "method.not.allowed")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    item = httpx.patch(f"{org.base_url}{FN}/func-0", headers=auth(org))
    assert set(item.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PUT", "DELETE"}


def test_201_carries_location(org: Org) -> None:
    created = org.api("PUT", f"{FN}/func-0", function())
    assert created.status_code == 201 and created.headers["Location"] == f"{FN}/func-0"
    assert org.api("GET", created.headers["Location"]).status_code == 200
    posted = org.api("POST", PROMPTS, prompt("located"))
    assert posted.status_code == 201
    assert posted.headers["Location"] == f"{PROMPTS}/{posted.json()['id']}"
    assert org.api("GET", posted.headers["Location"]).json()["name"] == "located"
    updated = org.api("PUT", f"{FN}/func-0", function(), {"If-Match": created.headers["ETag"]})
    assert updated.status_code == 200 and "Location" not in updated.headers


def test_cache_control_no_store_on_answers_and_errors(org: Org) -> None:
    for response in (
        org.api("GET", FN),
        org.api("GET", f"{FN}/missing"),
        httpx.get(f"{org.base_url}{FN}"),  # 401
        httpx.post(
            f"{org.base_url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("emulator-client", "emulator-secret"),
        ),
    ):
        assert response.headers["Cache-Control"] == "no-store", response.status_code


# --- conditional requests ------------------------------------------------------------------------


def test_if_none_match_compares_weakly_with_lists_and_star(org: Org) -> None:
    etag = org.api("PUT", f"{FN}/func-0", function()).headers["ETag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', f'W/"x",W/{etag}', "*"):
        response = org.api("GET", f"{FN}/func-0", headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.headers["ETag"] == etag and response.content == b""
    assert org.api("GET", f"{FN}/func-0", headers={"If-None-Match": '"other", W/"x"'}).status_code == 200
    # On a write, a matching If-None-Match (here a list holding the current etag) is 412.
    assert_genesys_error(
        org.api("PUT", f"{FN}/func-0", function(), {"If-Match": etag, "If-None-Match": f'"x", {etag}'}),
        412,
        "precondition.failed",
    )


def test_if_match_compares_strongly_with_lists_and_star(org: Org) -> None:
    etag = org.api("PUT", f"{FN}/func-0", function()).headers["ETag"]
    # A weak tag never matches strongly, even with the right opaque value.
    assert_genesys_error(
        org.api("PUT", f"{FN}/func-0", function(description="w"), {"If-Match": f"W/{etag}"}),
        412,
        "precondition.failed",
    )
    listed = org.api("PUT", f"{FN}/func-0", function(description="l"), {"If-Match": f'"stale", {etag}'})
    assert listed.status_code == 200, listed.text
    star = org.api("PUT", f"{FN}/func-0", function(description="s"), {"If-Match": "*"})
    assert star.status_code == 200
    assert_genesys_error(
        org.api("PUT", f"{FN}/func-1", function(1), {"If-Match": "*"}), 412, "precondition.failed"
    )  # '*' needs a current representation
    deleted = org.api("DELETE", f"{FN}/func-0", headers={"If-Match": f'"a", "b", {star.headers["ETag"]}'})
    assert deleted.status_code == 204


# --- 413 before the body is read ------------------------------------------------------------------


def raw_request(base_url: str, data: bytes) -> bytes:
    """Send bytes on a fresh socket, keep it open; the answer's status line and headers."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(data)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_413_from_content_length_without_sending_the_body(org: Org) -> None:
    token = org.token()
    head = (
        f"PUT {FN}/func-0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {50 * MIB}\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    answer = raw_request(org.base_url, head)  # the 50 MiB never follow: the answer comes anyway
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.perf_counter() - started < 5


def test_413_while_streaming_a_chunked_body_that_never_ends(org: Org) -> None:
    # 2 MiB of a chunked body that is never finished: only a server that stops reading at the
    # limit can answer at all (one that buffers the whole body would wait for the end forever).
    token = org.token()
    head = (
        f"PUT {FN}/func-0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer = raw_request(org.base_url, head + b'4\r\n{"a"\r\n' + chunk * 32)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert org.api("GET", f"{FN}/func-0").status_code == 404  # nothing was stored


def test_admin_bodies_have_limits_too(org: Org) -> None:
    huge = b'{"function-definitions": [' + b" " * (65 * MIB) + b"]}"
    response = httpx.post(
        f"{org.base_url}/__emulator/bulk", content=huge, headers={"Content-Type": "application/json"}
    )
    assert_genesys_error(response, 413, "request.entity.too.large")
    faults = httpx.put(f"{org.base_url}/__emulator/faults", content=b"{" + b" " * (2 * MIB) + b"}")
    assert_genesys_error(faults, 413, "request.entity.too.large")


# --- OAuth edge cases ------------------------------------------------------------------------------


def token_request(
    url: str, authorization: bytes, form: bytes = b"grant_type=client_credentials"
) -> httpx.Response:
    return httpx.post(
        f"{url}/oauth/token",
        content=form,
        headers={"Authorization": authorization, "Content-Type": "application/x-www-form-urlencoded"},
    )


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic " + base64.b64encode("émulateur:sécret".encode()),  # non-ASCII credentials
        b"Basic " + base64.b64encode(b"emulator-client:\xff\xfe"),  # not UTF-8
        b"Basic " + base64.b64encode("emulator-client:emulator-secret\u00e9".encode()),
        "Basic ZW11bGF0b3ItY2xpZW50OmVtdWxhdG9yLXNlY3JldA==é".encode("latin-1"),  # non-ASCII header
        b"Basic not base64!!",
        b"Basic " + base64.b64encode(b"no-colon-at-all"),
        b"Basic",
        b"Bearer abc",
        b"",
    ],
)
def test_malformed_client_credentials_are_401(org: Org, authorization: bytes) -> None:
    response = token_request(org.base_url, authorization)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_api_401_challenges_with_bearer(org: Org) -> None:
    missing = httpx.get(f"{org.base_url}{FN}")
    assert_genesys_error(missing, 401, "authentication.required")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer ")
    wrong = httpx.get(f"{org.base_url}{FN}", headers={"Authorization": "Bearer nope"})
    assert_genesys_error(wrong, 401, "bad.credentials")
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]


def test_unknown_scopes_are_invalid_scope(org: Org) -> None:
    basic = b"Basic " + base64.b64encode(b"emulator-client:emulator-secret")
    response = token_request(
        org.base_url, basic, b"grant_type=client_credentials&scope=ai%3Allm%3Aread+launch:missiles"
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"
    narrowed = token_request(org.base_url, basic, b"grant_type=client_credentials&scope=ai%3Allm%3Aread")
    assert narrowed.status_code == 200
    token = narrowed.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{org.base_url}/api/v2/ai/llm/models", headers=headers).status_code == 200
    assert_genesys_error(httpx.get(f"{org.base_url}{FN}", headers=headers), 403, "missing.permissions")


def test_expired_tokens_are_evicted() -> None:
    with running_emulator(EmulatorConfig(token_lifetime_s=60)) as url:
        org = Org(url)
        first = org.token()
        org.token()
        assert org.admin("GET", "stats")["tokens"] == 2
        org.admin("POST", "clock", {"advance_s": 61})
        expired = httpx.get(f"{url}{FN}", headers={"Authorization": f"Bearer {first}"})
        assert_genesys_error(expired, 401, "bad.credentials")
        assert org.admin("GET", "stats")["tokens"] == 1  # the one just used is gone
        org.token()  # issuing sweeps the rest
        assert org.admin("GET", "stats")["tokens"] == 1


def test_an_unknown_client_id_costs_a_secret_comparison() -> None:
    # Timing on a shared machine is too noisy to assert; what can be asserted is the outcome of
    # both paths: same status, same body, same headers (apart from the correlation id).
    with running_emulator(EmulatorConfig()) as url:
        known = httpx.post(
            f"{url}/oauth/token", data={"grant_type": "client_credentials"}, auth=("emulator-client", "x")
        )
        unknown = httpx.post(
            f"{url}/oauth/token", data={"grant_type": "client_credentials"}, auth=("nobody", "x")
        )
        assert known.status_code == unknown.status_code == 401
        assert known.json() == unknown.json()
        strip = {"ININ-Correlation-Id".lower(), "date"}
        assert {k: v for k, v in known.headers.items() if k not in strip} == {
            k: v for k, v in unknown.headers.items() if k not in strip
        }


# --- admin safety ---------------------------------------------------------------------------------


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert is_loopback("127.0.0.2") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.4")
    assert not is_loopback("emulator.example.com")


def test_binding_beyond_loopback_generates_an_admin_token() -> None:
    exposed = EmulatorConfig()
    make_server(exposed, "0.0.0.0", 0)  # built, never started: nothing listens beyond loopback
    assert exposed.admin_token and len(exposed.admin_token) >= 24
    local = EmulatorConfig()
    make_server(local, "127.0.0.1", 0)
    assert local.admin_token is None
    given = EmulatorConfig(admin_token="chosen")
    make_server(given, "0.0.0.0", 0)
    assert given.admin_token == "chosen"


@pytest.fixture
def guarded() -> Iterator[str]:
    with running_emulator(EmulatorConfig(admin_token="s3cret", rate_limit_per_minute=100_000)) as url:
        yield url


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "reset", None),
        ("GET", "stats", None),
        ("PUT", "faults", {}),
        ("POST", "concurrent-writer", {"resources": []}),
        ("POST", "bulk", {}),
        ("GET", "clock", None),
        ("POST", "clock", {"advance_s": 1}),
    ],
)
def test_admin_endpoints_need_the_admin_token(guarded: str, method: str, path: str, body: Any) -> None:
    url = f"{guarded}/__emulator/{path}"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
        refused = httpx.request(method, url, json=body, headers=headers)
        assert_genesys_error(refused, 401, "authentication.required")
        assert refused.headers["WWW-Authenticate"].startswith("Bearer ")
    allowed = httpx.request(method, url, json=body, headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200, allowed.text


def test_the_api_itself_does_not_need_the_admin_token(guarded: str) -> None:
    assert Org(guarded).api("GET", FN).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "faults", b"not json"),
        ("PUT", "faults", b"[1, 2]"),
        ("PUT", "faults", b'{"latency_ms": "slow"}'),
        ("PUT", "faults", b'{"drop": 2}'),
        ("PUT", "faults", b'{"fail": {"abc": 0.5}}'),
        ("PUT", "faults", b'{"fail": {"503": "often"}}'),
        ("PUT", "faults", b'{"fail": [503]}'),
        ("PUT", "faults", b'{"retry_after_s": true}'),
        ("PUT", "faults", b'{"seed": [1]}'),
        ("PUT", "faults", b'{"rate_limit_per_minute": "many"}'),
        ("POST", "concurrent-writer", b'{"resources": [{"kind": "function-definitions"}]}'),
        ("POST", "concurrent-writer", b'{"resources": "all"}'),
        ("POST", "concurrent-writer", b"[]"),
        ("POST", "bulk", b'{"function-definitions": {"id": "x"}}'),
        ("POST", "bulk", b'{"function-definitions": ["x"]}'),
        ("POST", "bulk", b'{"prompts": [{"name": "p", "variants": [{"weight": "heavy"}]}]}'),
        ("POST", "bulk", b'{"context-policies": [{"id": "p", "token_limit_matrix": 5}]}'),
        ("POST", "bulk", b'{"function-definitions": [{"id": "f", "timeoutMillis": "soon"}]}'),
        ("POST", "bulk", b"{"),
        ("POST", "clock", b""),
        ("POST", "clock", b"{}"),
        ("POST", "clock", b"[60]"),
        ("POST", "clock", b'{"advance_s": "60"}'),
        ("POST", "clock", b'{"advance_s": true}'),
        ("POST", "clock", b'{"advance_s": 0}'),
        ("POST", "clock", b'{"advance_s": -5}'),
        ("POST", "clock", b'{"advance_s": NaN}'),
        ("POST", "clock", b'{"advance_s": Infinity}'),
        ("POST", "clock", b'{"advance_s": 2678401}'),
        ("POST", "clock", b'{"advance_s": 60, "to": "2030-01-01"}'),
    ],
)
def test_malformed_admin_bodies_are_400(org: Org, method: str, path: str, body: bytes) -> None:
    response = httpx.request(
        method,
        f"{org.base_url}/__emulator/{path}",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert_genesys_error(response, 400, response.json().get("code", "?"))
    assert response.json()["code"] in ("bad.request", "invalid.value")


def test_a_rejected_fault_change_changes_nothing(org: Org) -> None:
    bad = httpx.put(f"{org.base_url}/__emulator/faults", json={"fail": {"503": 1.0}, "drop": 7})
    assert bad.status_code == 400
    assert org.api("GET", FN).status_code == 200  # the valid half (fail 503) was not applied
