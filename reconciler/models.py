"""The shapes of desired state: the three manifest kinds, their identity, and reconciler.yaml.

Models here are frozen values with ``extra="forbid"`` so a typo in a manifest is an error, never
silently ignored. Field names are snake_case in Python and camelCase in YAML (the alias).
This module knows nothing about the wire: mapping spec <-> each endpoint's casing lives in the
per-kind wire mapping (``reconciler.kinds``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt
from pydantic.alias_generators import to_camel

API_VERSION = "reconciler.genesys.cloud/v1"

# Label set on every resource we create or update, naming the project that manages it.
# Prune only ever deletes live resources carrying this label with our project's value.
MANAGED_BY_LABEL = "reconciler.genesys.cloud/managed-by"

# Annotation (local only, never sent) that keeps a resource out of adoption: the planner does not
# add the managed-by label to it. `export` writes it on unlabelled resources unless `--adopt`.
NO_ADOPT_ANNOTATION = "reconciler.genesys.cloud/adopt"


# Genesys Cloud regions: name -> domain (API host api.<domain>, login host login.<domain>).
REGIONS: dict[str, str] = {
    "us-east-1": "mypurecloud.com",
    "eu-west-1": "mypurecloud.ie",
    "ap-southeast-2": "mypurecloud.com.au",
    "ap-northeast-1": "mypurecloud.jp",
    "eu-central-1": "mypurecloud.de",
    "us-west-2": "usw2.pure.cloud",
    "ca-central-1": "cac1.pure.cloud",
    "ap-northeast-2": "apne2.pure.cloud",
    "eu-west-2": "euw2.pure.cloud",
    "ap-south-1": "aps1.pure.cloud",
    "sa-east-1": "sae1.pure.cloud",
    "me-central-1": "mec1.pure.cloud",
    "ap-northeast-3": "apne3.pure.cloud",
    "eu-central-2": "euc2.pure.cloud",
    "mx-central-1": "mxc1.pure.cloud",
    "ap-southeast-1": "apse1.pure.cloud",
    "us-east-2": "use2.us-gov-pure.cloud",
}


class Kind(StrEnum):
    """The manifest kinds, in the users' words (the YAML ``kind:`` value)."""

    FUNCTION_DEFINITION = "FunctionDefinition"
    CONTEXT_POLICY = "ContextPolicy"
    PROMPT = "Prompt"


class ResourceKey(NamedTuple):
    """The identity of a resource across git and the live org: kind plus metadata.name.

    For functions and context policies the name is the live id; for prompts it is the unique
    prompt name (the live id is server-assigned and never part of desired state).
    """

    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> ResourceKey:
        """Parse ``Kind/name`` (as given to --target/--exclude); the kind in any case, as kubectl
        takes it (``prompt/x``). Raises ValueError saying what is wrong."""
        kind, sep, name = text.partition("/")
        kinds = ", ".join(k.value for k in Kind)
        if not sep or not name:
            raise ValueError(f"expected KIND/NAME (e.g. FunctionDefinition/{text or 'name'}), got {text!r}")
        for known in Kind:
            if kind.lower() == known.value.lower():
                return cls(known, name)
        raise ValueError(f"unknown kind {kind!r} in {text!r} (expected one of {kinds})")


class Model(BaseModel):
    """Base for every manifest model: frozen, strict about unknown fields, camelCase in YAML."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        strict=False,
    )


# --- FunctionDefinition -------------------------------------------------------------------


class FunctionDefinitionSpec(Model):
    """A function the model may call. ``parameters`` is a JSON Schema object (checked by rules)."""

    name: str = Field(description="The function name the model calls.")
    description: str = Field(description="What the function does; the model reads this.")
    timeout_millis: StrictInt = Field(description="Call timeout in milliseconds, 1..60000.")
    parameters: dict[str, Any] = Field(description="JSON Schema (Draft 7) of type object.")


# --- Prompt ---------------------------------------------------------------------------------


class PromptVariable(Model):
    name: str
    type: Literal["string", "number", "boolean", "array"] = "string"
    required: bool = False
    default_value: Any = None


class ContextRule(Model):
    source: Literal["conversation_history", "external_api", "knowledge_base"]
    max_tokens: StrictInt = Field(ge=0)
    injection_point: Literal["system", "user", "assistant"] = "system"


class PromptVariant(Model):
    name: str
    template: str
    weight: StrictInt = Field(ge=0, le=100)


# A duration as people write it in reconciler.yaml and on the command line: 90s, 10m, 1h30m, 2.5s.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"


class PromptHealthGate(Model):
    """Limits the prompt must stay within while `apply --health-gate` watches it after a change.

    Each limit left out is judged against the prompt's own baseline instead (see
    ``reconciler.metrics``). Local only: never sent to the service, never part of a diff.
    """

    min_success_rate: StrictFloat | StrictInt | None = Field(
        default=None, ge=0, le=1, description="Lowest acceptable share of successful calls, 0..1."
    )
    max_latency_ms: StrictFloat | StrictInt | None = Field(
        default=None, gt=0, description="Highest acceptable p95 latency in milliseconds."
    )
    max_tokens_per_call: StrictFloat | StrictInt | None = Field(
        default=None, gt=0, description="Highest acceptable mean tokens per call."
    )


class PromptSpec(Model):
    """A prompt template with its variables, context budget, tools and A/B variants."""

    version: str = Field(description="Semantic version chosen by the author, e.g. 1.2.0.")
    model_id: str
    max_tokens: StrictInt = Field(gt=0)
    template: str
    variables: list[PromptVariable] = Field(default_factory=list)
    context_rules: list[ContextRule] = Field(default_factory=list)
    functions: list[str] = Field(default_factory=list, description="Names of FunctionDefinitions.")
    context_policy: str | None = Field(default=None, description="Name of a ContextPolicy.")
    variants: list[PromptVariant] = Field(default_factory=list)
    # exclude=True: the gate's limits are ours, not the service's; they are never sent or diffed.
    health_gate: PromptHealthGate | None = Field(
        default=None,
        exclude=True,
        description="Limits checked by `apply --health-gate` (local only, never sent to the service).",
    )


# --- ContextPolicy --------------------------------------------------------------------------


class TokenLimits(Model):
    hard_limit: StrictInt = Field(gt=0)
    soft_limit: StrictInt | None = Field(default=None, gt=0)
    soft_limit_ratio: StrictFloat | None = Field(default=None, gt=0, lt=1)


class Retention(Model):
    persist_system_prompts: bool = True
    retain_user_pii: bool = False
    auto_compact_threshold: StrictFloat | None = None
    eviction_policy: Literal["lru", "fifo", "summarize"] = "lru"


class PiiRule(Model):
    name: str
    pattern: str
    replacement: str = "[REDACTED]"


class AttributeMapping(Model):
    source: str
    attribute: str
    data_type: Literal["string", "number", "boolean", "date"]


class ContextPolicySpec(Model):
    """How a conversation's context is budgeted, retained, masked and enriched."""

    model_id: str
    token_limits: TokenLimits
    retention: Retention = Field(default_factory=Retention)
    pii_masking: list[PiiRule] = Field(default_factory=list)
    metadata_fields: list[str] = Field(default_factory=list)
    attribute_mappings: list[AttributeMapping] = Field(default_factory=list)
    flow_id: str | None = None
    format: Literal["json", "text"] = "json"


# --- The documents --------------------------------------------------------------------------


class Metadata(Model):
    name: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict, description="Local only; never sent.")


class FunctionDefinition(Model):
    api_version: Literal["reconciler.genesys.cloud/v1"]
    kind: Literal["FunctionDefinition"]
    metadata: Metadata
    spec: FunctionDefinitionSpec


class Prompt(Model):
    api_version: Literal["reconciler.genesys.cloud/v1"]
    kind: Literal["Prompt"]
    metadata: Metadata
    spec: PromptSpec


class ContextPolicy(Model):
    api_version: Literal["reconciler.genesys.cloud/v1"]
    kind: Literal["ContextPolicy"]
    metadata: Metadata
    spec: ContextPolicySpec


Manifest = Annotated[FunctionDefinition | Prompt | ContextPolicy, Field(discriminator="kind")]
MANIFEST_MODELS: dict[Kind, type[FunctionDefinition | Prompt | ContextPolicy]] = {
    Kind.FUNCTION_DEFINITION: FunctionDefinition,
    Kind.PROMPT: Prompt,
    Kind.CONTEXT_POLICY: ContextPolicy,
}


_KIND_OF: dict[str, Kind] = {k.value: k for k in Kind}  # a lookup: Kind(value) costs ~1 µs


def key_of(manifest: FunctionDefinition | Prompt | ContextPolicy) -> ResourceKey:
    return ResourceKey(_KIND_OF[manifest.kind], manifest.metadata.name)


def spec_dict(manifest: FunctionDefinition | Prompt | ContextPolicy) -> dict[str, Any]:
    """The spec as plain data in manifest casing (camelCase), unset optionals left out."""
    return manifest.spec.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- reconciler.yaml ------------------------------------------------------------------------


class Credentials(Model):
    """Names of the environment variables holding the OAuth client credentials (never values)."""

    client_id_env: str = "GENESYS_CLIENT_ID"
    client_secret_env: str = "GENESYS_CLIENT_SECRET"


class Environment(Model):
    """One org to reconcile against. Exactly one of region, base_url, embedded."""

    region: str | None = None
    base_url: str | None = None
    login_url: str | None = Field(
        default=None, description="Where tokens come from with a baseUrl (default: the baseUrl itself)."
    )
    embedded: bool = Field(default=False, description="Use the in-process emulator in .reconciler/.")
    credentials: Credentials = Field(default_factory=Credentials)
    manifests: list[str] | None = Field(default=None, description="Overrides the project's paths.")
    variables: dict[str, str] = Field(default_factory=dict, description="Substituted as ${var}.")
    prune: bool = Field(
        default=False,
        description="plan and apply delete live resources this project manages that are gone from git "
        "(as --prune does).",
    )
    health_gate: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        description="apply watches the prompts it changed for this long (e.g. 10m) and rolls them "
        "back when they get worse (as --health-gate does; the option wins).",
    )
    journal: str | None = Field(
        default=None,
        description="This environment's audit journal, overriding the project's: a local path or "
        "git+URL#BRANCH (the file <environment>.jsonl on that branch).",
    )


def _pointers_into_spec(pointers: list[str]) -> list[str]:
    for pointer in pointers:
        if not pointer.startswith("/"):
            # A relative pointer would silently match nothing.
            raise ValueError(f"JSON pointer {pointer!r} must start with '/' (it is relative to the spec)")
    return pointers


SpecPointers = Annotated[list[str], AfterValidator(_pointers_into_spec)]


class IgnoreDifferences(Model):
    """Fields to leave out of the diff, as JSON pointers into the spec (e.g. /template)."""

    kind: Kind
    name: str | None = Field(default=None, description="Only this resource; all of the kind if unset.")
    json_pointers: SpecPointers


class SensitiveFields(Model):
    """Fields shown only as ``(sensitive, sha256:...)`` in every output."""

    kind: Kind
    json_pointers: SpecPointers


class Webhook(Model):
    url: str
    secret_env: str | None = Field(default=None, description="Env var holding the HMAC secret.")
    timeout_seconds: float = Field(default=2.0, gt=0, le=30)


class ProjectConfig(Model):
    """The project file, reconciler.yaml."""

    project: str = Field(default="default", description="Value of the managed-by label.")
    manifests: list[str] = Field(default_factory=lambda: ["manifests"])
    environments: dict[str, Environment] = Field(default_factory=dict)
    ignore_differences: list[IgnoreDifferences] = Field(default_factory=list)
    sensitive: list[SensitiveFields] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    journal: str = Field(
        default=".reconciler/journal.jsonl",
        description="The audit journal: a local path (relative to this file), or git+URL#BRANCH to "
        "keep it on a branch of a git repository shared by every machine that applies "
        "(e.g. git+https://github.com/org/repo.git#reconciler-journal).",
    )


# --- Live state -----------------------------------------------------------------------------


class LiveResource:
    """A resource as the live org holds it, mapped to manifest casing by its kind's adapter.

    ``spec`` has server-managed fields dropped; ``id`` is the server's id (equal to the name for
    client-assigned kinds); ``etag`` is what the listing showed, sent back as If-Match on writes.

    Built from a listing, it holds the spec as the wire had it (``wire_spec``) and makes the
    canonical ``spec`` (through the kind's model) on first use: a plan of resources in sync
    compares the wire's spec with git's exactly and never needs it (~20 µs of 30 per resource).
    """

    __slots__ = (
        "_canonical",
        "_spec",
        "date_modified",
        "etag",
        "id",
        "key",
        "labels",
        "modified_by",
        "wire_spec",
    )

    def __init__(
        self,
        key: ResourceKey,
        id: str,
        etag: str,
        spec: dict[str, Any],
        labels: dict[str, str],
        modified_by: str | None = None,  # who last wrote it, when the service says (drift reports it)
        date_modified: str | None = None,
        *,
        canonical: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """``spec`` is canonical already, or, with ``canonical``, the wire's spec that it maps."""
        self.key = key
        self.id = id
        self.etag = etag
        self.labels = labels
        self.modified_by = modified_by
        self.date_modified = date_modified
        self.wire_spec = spec
        self._spec: dict[str, Any] | None = None if canonical else spec
        self._canonical = canonical

    @property
    def spec(self) -> dict[str, Any]:
        if self._spec is None:
            assert self._canonical is not None
            self._spec = self._canonical(self.wire_spec)
        return self._spec

    def _fields(self) -> tuple[Any, ...]:
        return (self.key, self.id, self.etag, self.spec, self.labels, self.modified_by, self.date_modified)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LiveResource):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # it holds dicts, as the tuple it replaced did

    def __repr__(self) -> str:
        names = ("key", "id", "etag", "spec", "labels", "modified_by", "date_modified")
        return f"LiveResource({', '.join(f'{n}={v!r}' for n, v in zip(names, self._fields(), strict=True))})"
