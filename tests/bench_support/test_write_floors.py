"""The apply benchmark's clients really write: every PUT lands, guarded by a current ETag."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.__main__ import _functions, _token, bare_puts, load_live, raw_puts, seed_apply
from bench.harness import emulator
from reconciler.kinds import adapter_for
from reconciler.models import Kind

Floor = Callable[[str, list[dict[str, Any]], str, int], float]


@pytest.mark.parametrize(
    "floor", [raw_puts, bare_puts, seed_apply], ids=["minimal client", "httpx", "seed-style"]
)
def test_every_put_lands(tmp_path: Path, floor: Floor) -> None:
    documents = _functions(25)
    collection = adapter_for(Kind.FUNCTION_DEFINITION).collection_path
    with emulator(0, 100_000, tmp_path / "org.db") as url:
        load_live(url, documents, "bench")
        listed = {"pageSize": 100}
        before = httpx.get(url + collection, params=listed, headers=_token(url)).json()["entities"]

        assert floor(url, documents, " w0", 4) > 0

        after = httpx.get(url + collection, params=listed, headers=_token(url)).json()["entities"]
    assert len(after) == len(documents)
    assert all(e["description"].endswith(" w0") for e in after)
    etags = {e["id"]: e["etag"] for e in before}
    assert all(e["etag"] != etags[e["id"]] for e in after)
