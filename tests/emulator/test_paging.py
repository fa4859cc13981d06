"""Listings page stably whatever happens between two page requests (inserts, updates, deletes),
past the end, and with the prompts' name filter."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Org
from tests.emulator.test_http_semantics import FN, PROMPTS, function, prompt


def _ids(entities: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in entities]


def test_listing_pages_follow_writes_between_requests(org: Org) -> None:
    org.admin("POST", "bulk", {"function-definitions": [function(i) for i in range(250)]})

    def page(number: int, size: int = 100) -> dict[str, Any]:
        response = org.api("GET", f"{FN}?pageSize={size}&pageNumber={number}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    first = page(1)
    assert _ids(first["entities"]) == [f"func-{i}" for i in range(100)]
    # Between pages: two rows of page 1 go, one new row comes (at the end), one is updated.
    for i in (3, 50):
        etag = org.api("GET", f"{FN}/func-{i}").headers["ETag"]
        assert org.api("DELETE", f"{FN}/func-{i}", headers={"If-Match": etag}).status_code == 204
    assert org.api("PUT", f"{FN}/func-900", function(900)).status_code == 201
    etag = org.api("GET", f"{FN}/func-120").headers["ETag"]
    assert org.api("PUT", f"{FN}/func-120", function(120, description="new"), {"If-Match": etag}).is_success
    order = [f"func-{i}" for i in range(250) if i not in (3, 50)] + ["func-900"]

    second = page(2)
    assert _ids(second["entities"]) == order[100:200]  # shifted by the deletes, as OFFSET was
    assert second["total"] == 249 and second["pageCount"] == 3
    assert second["nextUri"].endswith("pageSize=100&pageNumber=3")
    last = page(3)
    assert _ids(last["entities"]) == order[200:] and "nextUri" not in last
    assert last["previousUri"].endswith("pageNumber=2") and last["lastUri"].endswith("pageNumber=3")
    past = page(4)
    assert past["entities"] == [] and past["total"] == 249 and past["pageCount"] == 3
    assert _ids(page(83, 3)["entities"]) == order[246:]
    assert page(10**15)["entities"] == []


def test_prompt_name_filter_pages(org: Org) -> None:
    created = [org.api("POST", PROMPTS, prompt(f"p{i}")).json()["id"] for i in range(3)]
    body = org.api("GET", f"{PROMPTS}?name=p1&pageSize=1&pageNumber=1").json()
    assert _ids(body["entities"]) == [created[1]] and body["total"] == 1 and body["pageCount"] == 1
    assert "name=p1" in body["selfUri"] and "nextUri" not in body
    assert org.api("GET", f"{PROMPTS}?name=p1&pageSize=1&pageNumber=2").json()["entities"] == []
    none = org.api("GET", f"{PROMPTS}?name=nope").json()
    assert none["entities"] == [] and none["total"] == 0 and none["pageCount"] == 0
    everything = org.api("GET", f"{PROMPTS}?pageSize=2&pageNumber=2").json()
    assert _ids(everything["entities"]) == created[2:] and everything["total"] == 3


def test_listings_carry_any_json_number_and_input_refuses_what_json_has_not(org: Org) -> None:
    # An integer over 64 bits (which orjson, used elsewhere, cannot hold) is listed exactly.
    huge = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 2**70 + 1}}}
    big = function(1, parameters=huge)
    assert org.api("PUT", f"{FN}/func-1", big).status_code == 201
    assert org.api("PUT", f"{FN}/func-2", function(2)).status_code == 201
    listed = {e["id"]: e for e in org.listing(FN)}
    assert listed["func-1"]["parameters"]["properties"]["n"]["maximum"] == 2**70 + 1
    assert listed["func-2"]["description"] == "d"
    # NaN and Infinity are not JSON: refused on input, so no page ever holds them.
    token = org.token()
    for constant in ("NaN", "Infinity", "-Infinity"):
        raw = f'{{"id": "func-3", "name": "f3", "description": "d", "timeoutMillis": {constant}}}'
        response = httpx.put(
            f"{org.base_url}{FN}/func-3",
            content=raw,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 400, response.text


def test_a_listing_sends_each_body_as_a_get_of_it_does(org: Org) -> None:
    # Listings splice the stored JSON text in; it must read back as the same data, text included.
    body = function(1, description='Prix réduit — 50 % 🎉 "quoted" \\ back\nslash')
    body["parameters"] = {"type": "object", "properties": {"n": {"type": "number", "maximum": 1e300}}}
    assert org.api("PUT", f"{FN}/func-1", body).status_code == 201
    listed = org.api("GET", f"{FN}?pageSize=5&pageNumber=1")
    assert listed.headers["content-type"] == "application/json"
    envelope = listed.json()
    assert list(envelope) == [
        "entities",
        "pageSize",
        "pageNumber",
        "total",
        "pageCount",
        "selfUri",
        "firstUri",
        "lastUri",
    ]
    assert envelope["entities"] == [org.api("GET", f"{FN}/func-1").json()]
    assert envelope["entities"][0]["description"] == body["description"]
