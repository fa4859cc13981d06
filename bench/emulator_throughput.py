"""How fast the emulator itself is on loopback, so we know it is not the bottleneck.

    python -m bench.emulator_throughput

Measures `reconciler emulator serve` start-up (process start to first answer), then GET and
conditional PUT requests per second with 8 concurrent clients (bounded: 2,000 GETs, 1,000 PUTs).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import emulator


async def hammer(url: str, token: str) -> tuple[float, float]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=httpx.Limits(max_connections=8)
    ) as http:
        body = {
            "id": "func-t",
            "name": "t",
            "description": "d",
            "timeoutMillis": 10,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
        await http.put("/api/v2/ai/llm/function-definitions/func-t", json=body)
        gate = asyncio.Semaphore(8)

        async def get() -> None:
            async with gate:
                await http.get("/api/v2/ai/llm/function-definitions/func-t")

        started = time.perf_counter()
        await asyncio.gather(*(get() for _ in range(2000)))
        gets = 2000 / (time.perf_counter() - started)

        async def put(i: int) -> None:
            async with gate:
                key = f"func-p{i % 50}"
                live = await http.get(f"/api/v2/ai/llm/function-definitions/{key}")
                extra = {"If-Match": live.headers["ETag"]} if live.status_code == 200 else {}
                await http.put(
                    f"/api/v2/ai/llm/function-definitions/{key}", json={**body, "id": key}, headers=extra
                )

        started = time.perf_counter()
        await asyncio.gather(*(put(i) for i in range(1000)))
        puts = 1000 / (time.perf_counter() - started)  # each PUT here also costs one GET
        return gets, puts


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with emulator(0, 1_000_000, Path(tmp) / "e.db") as url:
            startup = time.perf_counter() - started
            token = httpx.post(
                f"{url}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("emulator-client", "emulator-secret"),
            ).json()["access_token"]
            gets, puts = asyncio.run(hammer(url, token))
    print(f"startup {startup:.2f} s; GET {gets:.0f}/s; conditional PUT (GET+PUT pairs) {puts:.0f}/s")


if __name__ == "__main__":
    main()
