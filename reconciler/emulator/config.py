"""How an emulator instance behaves: its clients, limits, fixtures, injected faults and the
synthetic traffic its analytics query reports."""

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


@dataclass(frozen=True)
class Behaviour:
    """How one prompt (or one of its variants) performs from ``since`` (epoch seconds) on.

    ``variant`` None means every variant of the prompt. Set through ``PUT /__emulator/metrics``.
    """

    since: float
    prompt: str  # the prompt's name, as users know it
    variant: str | None
    success_rate: float
    latency_ms: float
    tokens_per_call: float


@dataclass
class Traffic:
    """Synthetic conversation traffic behind the analytics query (see ``emulator.analytics``).

    ``calls_per_second`` is per live prompt, split across its variants by weight. Changing it
    through ``PUT /__emulator/traffic`` appends to ``rate_changes`` so windows that ended before
    the change keep their numbers.
    """

    calls_per_second: float = 0.5
    seed: int = 0
    rate_changes: list[tuple[float, float]] = field(default_factory=list)  # (since, calls/s), oldest first
    behaviours: list[Behaviour] = field(default_factory=list)  # oldest first


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
    traffic: Traffic = field(default_factory=Traffic)
    # Serve the real platform endpoints (flows, conversations, the details query) with the
    # platform's fields only, without the LLM Gateway documents' variants beside them: what a
    # real org answers (see emulator.platform).
    real_shapes_only: bool = False
    # When set, /__emulator/* answers only requests bearing it (Authorization: Bearer <token>).
    # The server sets one whenever it listens beyond loopback (see server.make_server).
    admin_token: str | None = None
    # Where the emulator's clock starts relative to wall time (negative: behind). Only
    # ``POST /__emulator/clock`` moves it afterwards, and only forward (see State.now).
    clock_offset_s: float = 0.0
