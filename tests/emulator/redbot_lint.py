"""REDbot (the HTTP linter behind redbot.org) over the emulator's authenticated GETs.

REDbot's own CLI sends no request headers, so this drives its checks (the response linter and the
active checks it follows up with: content negotiation, Range, If-None-Match, If-Modified-Since)
with the Authorization header a client sends. Anything it reports above a note (a warning or a
"bad") is a finding. `tests/emulator/test_redbot.py` runs it against a loopback emulator;
`make redbot` runs it against `reconciler emulator serve`:

    python -m tests.emulator.redbot_lint http://127.0.0.1:8799
"""

from __future__ import annotations

import sys
import time
from configparser import ConfigParser
from dataclasses import dataclass

import httpx
import thor
from httplint.note import Note, levels
from redbot.resource import HttpResource
from redbot.resource.fetch import RedFetcher, RedHttpClient

CLIENT = ("emulator-client", "emulator-secret")
BASE = "/api/v2/ai/llm"
# REDbot's notes: what is good, and what is merely worth knowing ("can't be stored by caches").
NOTES = frozenset({levels.GOOD, levels.INFO})


@dataclass(frozen=True)
class Observation:
    url: str
    level: levels
    category: str
    summary: str

    def __str__(self) -> str:
        return f"[{self.level.value}] {self.category}: {self.summary}  ({self.url})"


def check(url: str, token: str) -> HttpResource:
    """REDbot's whole check of an authenticated GET of ``url``, its active checks included."""
    # A fresh connection pool per check: the default one is shared by every check in the process,
    # and a kept-alive connection from an earlier run of the loop answers the next with a timeout.
    RedFetcher.client = RedHttpClient()
    config = ConfigParser()
    config.read_dict({"redbot": {"enable_local_access": "True"}})  # the emulator is on loopback
    resource = HttpResource(config["redbot"])
    resource.set_request(url, headers=[("Authorization", f"Bearer {token}")])

    @thor.events.on(resource)
    def check_done() -> None:
        thor.stop()

    resource.check()
    thor.run()
    return resource


def observations(url: str, resource: HttpResource) -> list[Observation]:
    def walk(notes: list[Note]) -> list[Observation]:
        out: list[Observation] = []
        for note in notes:
            out.append(Observation(url, note.level, note.category.value, note.summary))
            out.extend(walk(note.subnotes))
        return out

    return walk(list(resource.response.notes))


def findings(found: list[Observation]) -> list[Observation]:
    return [o for o in found if o.level not in NOTES]


def token(base_url: str) -> str:
    response = httpx.post(
        f"{base_url}/oauth/token", data={"grant_type": "client_credentials"}, auth=CLIENT, timeout=10
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def targets(base_url: str, access: str) -> list[str]:
    """A listing and a resource of two kinds, created here so there is something to list."""
    auth = {"Authorization": f"Bearer {access}"}
    function = {
        "id": "redbot-lookup",
        "name": "redbot_lookup",
        "description": "Looks things up.",
        "timeoutMillis": 1000,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    put = httpx.put(f"{base_url}{BASE}/function-definitions/redbot-lookup", json=function, headers=auth)
    assert put.status_code in (200, 201), put.text
    prompt = {
        "name": "redbot-greeter",
        "version": "1.0.0",
        "template": "Hi {{ who }}",
        "modelId": "genesys-llm-v4",
        "maxTokens": 100,
        "variables": [{"name": "who", "type": "string", "required": True}],
    }
    created = httpx.post(f"{base_url}{BASE}/prompts", json=prompt, headers=auth)
    assert created.status_code in (200, 201), created.text
    return [
        f"{base_url}{BASE}/function-definitions?pageSize=25&pageNumber=1",
        f"{base_url}{BASE}/function-definitions/redbot-lookup",
        f"{base_url}{BASE}/prompts",
        f"{base_url}{BASE}/prompts/{created.json()['id']}",
    ]


def wait_until_up(base_url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{base_url}/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.emulator.redbot_lint BASE_URL", file=sys.stderr)
        return 2
    base_url = argv[0].rstrip("/")
    wait_until_up(base_url)
    access = token(base_url)
    bad: list[Observation] = []
    for url in targets(base_url, access):
        resource = check(url, access)
        if resource.fetch_error is not None or resource.response.status_code != 200:
            print(f"REDbot could not fetch {url}: {resource.fetch_error or resource.response.status_code}")
            return 1
        found = observations(url, resource)
        print(f"GET {url}: {resource.response.status_code}")
        for observation in found:
            print(f"  {observation.level.value:<7} {observation.category}: {observation.summary}")
        bad += findings(found)
    print(f"REDbot: {len(bad)} finding(s) above notes" + "".join(f"\n  {o}" for o in bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
