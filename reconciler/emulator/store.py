"""The emulator's state in SQLite: configuration resources, prompt history, and nothing else.

One lock serializes every read-check-write, so two concurrent conditional writes can never both
succeed. Resources keep their creation order (``seq``) so listings page stably.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (kind, id));
CREATE INDEX IF NOT EXISTS resources_order ON resources (kind, seq);
CREATE INDEX IF NOT EXISTS resources_name ON resources (kind, name);
CREATE TABLE IF NOT EXISTS versions (
    prompt_id TEXT NOT NULL, revision INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (prompt_id, revision));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _stored(body: dict[str, Any]) -> str:
    """A resource body as stored: compact JSON that a listing can send on as it is (so no NaN,
    which JSON has no word for; the API refuses it in bodies before anything is stored)."""
    return json.dumps(body, allow_nan=False, separators=(",", ":"))


class Store:
    def __init__(self, path: str) -> None:
        self.lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL" if path != ":memory:" else "PRAGMA journal_mode=MEMORY")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM resources").fetchone()
        self._seq = int(row[0])

    def org_id(self) -> str:
        """This org's identity: made once per database, so every emulator state is its own org."""
        with self.lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='org_id'").fetchone()
            if row:
                return str(row[0])
            org = str(uuid.uuid4())
            self._db.execute("INSERT INTO meta (key, value) VALUES ('org_id', ?)", (org,))
            return org

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock:
            self._db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT body FROM resources WHERE kind=? AND id=?", (kind, resource_id)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def find_by_name(self, kind: str, name: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT body FROM resources WHERE kind=? AND name=? ORDER BY seq LIMIT 1", (kind, name)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, kind: str, resource_id: str, name: str, body: dict[str, Any]) -> None:
        existing = self._db.execute(
            "SELECT seq FROM resources WHERE kind=? AND id=?", (kind, resource_id)
        ).fetchone()
        if existing:
            self._db.execute(
                "UPDATE resources SET name=?, body=? WHERE kind=? AND id=?",
                (name, _stored(body), kind, resource_id),
            )
        else:
            self._seq += 1
            self._db.execute(
                "INSERT INTO resources (kind, id, name, seq, body) VALUES (?, ?, ?, ?, ?)",
                (kind, resource_id, name, self._seq, _stored(body)),
            )

    def delete(self, kind: str, resource_id: str) -> None:
        self._db.execute("DELETE FROM resources WHERE kind=? AND id=?", (kind, resource_id))
        self._db.execute("DELETE FROM versions WHERE prompt_id=?", (resource_id,))

    def count(self, kind: str, name: str | None = None) -> int:
        if name is not None:
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM resources WHERE kind=? AND name=?", (kind, name)
                ).fetchone()[0]
            )
        return int(self._db.execute("SELECT COUNT(*) FROM resources WHERE kind=?", (kind,)).fetchone()[0])

    def page(self, kind: str, limit: int, offset: int, name: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.page_text(kind, limit, offset, name)]

    def page_text(self, kind: str, limit: int, offset: int, name: str | None = None) -> list[str]:
        """A page of stored bodies as the JSON text they were stored as (a listing sends them
        on without decoding and encoding each: that was most of a page's cost)."""
        if name is not None:
            rows = self._db.execute(
                "SELECT body FROM resources WHERE kind=? AND name=? ORDER BY seq LIMIT ? OFFSET ?",
                (kind, name, limit, offset),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT body FROM resources WHERE kind=? ORDER BY seq LIMIT ? OFFSET ?", (kind, limit, offset)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def add_version(self, prompt_id: str, revision: int, body: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO versions (prompt_id, revision, body) VALUES (?, ?, ?)",
            (prompt_id, revision, json.dumps(body)),
        )

    def versions(self, prompt_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT body FROM versions WHERE prompt_id=? ORDER BY revision DESC", (prompt_id,)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def reset(self) -> None:
        with self.lock:
            self._db.execute("DELETE FROM resources")
            self._db.execute("DELETE FROM versions")

    def close(self) -> None:
        self._db.close()
