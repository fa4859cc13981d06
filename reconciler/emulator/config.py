"""How an emulator instance behaves: its clients, limits, fixtures and injected faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ALL_SCOPES = frozenset(
    {
        "ai:llm:function-definition:read",
        "ai:llm:function-definition:write",
        "ai:llm:manage",
        "ai:llm:read",
        "ai:llm:write",
        "ai:metrics:read",
        "analytics:conversations:view",
        "conversation:view",
        "flow:read",
    }
)
DEFAULT_FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Faults:
    """Faults injected into API requests (never into admin or OAuth requests)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fail: dict[int, float] = field(default_factory=dict)  # status -> probability per request
    drop: float = 0.0  # probability that a processed request's response is lost (connection closed)
    slow_body_ms: float = 0.0  # response bodies trickle out over this long
    concurrent_writer: float = 0.0  # probability that a write meets an out-of-band edit just before it
    retry_after_s: int = 1  # what an injected 429 asks the client to wait


@dataclass
class EmulatorConfig:
    db: str = ":memory:"
    fixtures: Path = DEFAULT_FIXTURES
    rate_limit_per_minute: int = 300
    token_lifetime_s: int = 86400
    lax: bool = False  # allow updates without If-Match
    seed: int | None = None
    clients: dict[str, tuple[str, frozenset[str]]] = field(
        default_factory=lambda: {"emulator-client": ("emulator-secret", ALL_SCOPES)}
    )
    faults: Faults = field(default_factory=Faults)
    # When set, /__emulator/* answers only requests bearing it (Authorization: Bearer <token>).
    # The server sets one whenever it listens beyond loopback (see server.make_server).
    admin_token: str | None = None
