"""The error tree of reconciler: every failure a user can meet has a named class here.

The CLI has one error handler that maps these classes to exit codes; nothing else should
print a traceback for a user's mistake.

    ReconcilerError                  base; ``exit_code`` 1
    ├── ManifestError                bad manifests or project file; carries every Problem found
    ├── ConfigError                  missing environment, credentials, or project settings
    ├── UsageError                   a command-line argument that does not parse or names nothing
    ├── PlanFileError                a saved plan that cannot be read (malformed, unknown version)
    ├── RenderError                  a prompt preview cannot be built for this input
    ├── LiveCheckError               a rule that needs the live org failed during plan
    ├── StalePlanError               a saved plan no longer matches the manifests it was made from
    ├── JournalError                 the journal is unreadable, torn, or its chain is broken
    ├── HealthGateFailed             changed prompts got worse after apply; rolled back; exit_code 4
    └── ApiError                     the remote service answered with an error (status, code, contextId)
        ├── AuthError                401 / 403
        ├── NotFoundError            404
        ├── ConflictError            409 / 412: someone else changed it; exit_code 3
        ├── PreconditionRequiredError 428
        ├── RateLimitedError         429 (retry_after seconds)
        ├── ServerError              5xx
        └── TransportError           no answer at all (connection refused, dropped, timeout)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input, located as precisely as we can.

    ``line`` and ``col`` are 1-based; 0 means unknown. ``field`` is a dotted path inside the
    document (``spec.parameters.properties.city``), empty when the problem is the whole file.
    """

    file: str
    line: int
    col: int
    message: str
    field: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        what = f"{self.field}: {self.message}" if self.field else self.message
        return f"{where}: {what}"


class ReconcilerError(Exception):
    """Base of every error reconciler raises on purpose."""

    exit_code = 1


class ManifestError(ReconcilerError):
    """The manifests or project file are invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigError(ReconcilerError):
    """The environment, credentials, or project settings are missing or wrong."""


class UsageError(ReconcilerError):
    """A command-line argument does not parse (``--target func-a``) or names nothing that exists."""


class PlanFileError(ReconcilerError):
    """A saved plan file cannot be read: not JSON, an unknown ``format_version``, or malformed."""


class RenderError(ReconcilerError):
    """The prompt cannot be built for this input: a missing variable, an untyped attribute,
    a malformed conversation, a pattern that does not compile."""


class LiveCheckError(ReconcilerError):
    """A check that needs the live org (models, flows) failed while planning."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("\n".join(messages))


class StalePlanError(ReconcilerError):
    """A saved plan was made from manifests that have changed since."""


class JournalError(ReconcilerError):
    """The audit journal cannot be read, or its hash chain is broken."""


class HealthGateFailed(ReconcilerError):
    """The prompts a run changed got worse while watched (or could not be judged and
    ``--on-inconclusive fail`` was given); the run's prompt changes were rolled back."""

    exit_code = 4


@dataclass
class ApiErrorInfo:
    """What the service told us about a failed request (the Genesys error body)."""

    status: int
    code: str = ""
    message: str = ""
    context_id: str = ""
    method: str = ""
    url: str = ""
    details: list[dict[str, str]] = field(default_factory=list)


class ApiError(ReconcilerError):
    """The remote service answered a request with an error status."""

    def __init__(self, info: ApiErrorInfo) -> None:
        self.info = info
        ctx = f" (contextId {info.context_id})" if info.context_id else ""
        where = f"{info.method} {info.url}: " if info.method else ""
        super().__init__(f"{where}{info.status} {info.code}: {info.message}{ctx}")

    @property
    def status(self) -> int:
        return self.info.status

    @property
    def code(self) -> str:
        return self.info.code

    @property
    def context_id(self) -> str:
        return self.info.context_id


class AuthError(ApiError):
    """401 or 403: bad credentials, an expired token, or a missing scope."""


class NotFoundError(ApiError):
    """404: the resource does not exist."""


class ConflictError(ApiError):
    """409 or 412: the resource changed since we looked; nothing was overwritten."""

    exit_code = 3


class PreconditionRequiredError(ApiError):
    """428: an update was sent without If-Match (a client bug, never a user mistake)."""


class RateLimitedError(ApiError):
    """429: too many requests; ``retry_after`` is the server's advice in seconds."""

    def __init__(self, info: ApiErrorInfo, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(info)


class ServerError(ApiError):
    """5xx: the service failed; safe to retry idempotent requests."""


class TransportError(ApiError):
    """No HTTP answer at all: refused, dropped, or timed out. The request may have landed."""
