"""Sample inputs for prompt previews: which conversation, attributes and flow inputs to render
a prompt with, read from the files an author commits under ``manifests/samples/``.

A prompt may name its samples with annotations (paths relative to the manifests folder):
``reconciler.genesys.cloud/preview-conversation`` and ``.../preview-attributes``. Without them,
the first ``samples/conv-*.json`` is used with no attributes. Flow inputs come from
``samples/flows/<flowId>.json``, the model's capacity (whether it compacts history) from
``samples/models/<modelId>.json``. This module reads files; rendering itself is ``prompting``,
bounded in size and time, so a hostile template in a pull request fails its preview fast.
A prompt over its policy's hard limit is flagged on the preview's first line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import ConfigError, RenderError
from reconciler.kinds import flow_inputs_from
from reconciler.models import ContextPolicy, Kind, Prompt, ResourceKey
from reconciler.plan import Action, Plan

if TYPE_CHECKING:
    from reconciler.prompting import ModelCapacity

# reconciler.prompting (and Jinja2's sandbox with it) is imported when a preview is made: a
# plan without --format markdown never renders one.

CONVERSATION_ANNOTATION = "reconciler.genesys.cloud/preview-conversation"
ATTRIBUTES_ANNOTATION = "reconciler.genesys.cloud/preview-attributes"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def sample_flow_inputs(start: Path, flow_id: str | None) -> dict[str, str] | None:
    """``samples/flows/<flowId>.json`` in ``start`` or the nearest folder above it that has one:
    the flow's inputs as committed next to the manifests (the flow's body as the platform serves
    it, its ``inputSchema``, or the documents' ``inputDefinitions`` list), read by the same
    ``kinds.flow_inputs_from`` as a live flow."""
    if not flow_id:
        return None
    for folder in (start, *start.parents):
        path = folder / "samples" / "flows" / f"{flow_id}.json"
        if path.is_file():
            return flow_inputs_from(read_json(path), str(path))
    return None


def sample_model_capacity(start: Path, model_id: str | None) -> ModelCapacity | None:
    """``samples/models/<modelId>.json`` (the body of GET .../models/{id}/capacity) in ``start``
    or the nearest folder above it that has one."""
    if not model_id:
        return None
    for folder in (start, *start.parents):
        path = folder / "samples" / "models" / f"{model_id}.json"
        if path.is_file():
            from reconciler.prompting import model_capacity_from

            return model_capacity_from(read_json(path), str(path))
    return None


@dataclass(frozen=True)
class Samples:
    conversation: Mapping[str, Any]
    attributes: Mapping[str, Any] | None
    flow_inputs: Mapping[str, str] | None
    capacity: ModelCapacity | None = None


def samples_for(prompt: Prompt, policy: ContextPolicy | None, root: Path) -> Samples | None:
    conversation_file = prompt.metadata.annotations.get(CONVERSATION_ANNOTATION)
    if conversation_file:
        conversation_path = root / conversation_file
    else:
        found = sorted((root / "samples").glob("conv-*.json"))
        if not found:
            return None
        conversation_path = found[0]
    attributes_file = prompt.metadata.annotations.get(ATTRIBUTES_ANNOTATION)
    attributes = read_json(root / attributes_file) if attributes_file else None
    flow = sample_flow_inputs(root, policy.spec.flow_id if policy else None)
    capacity = sample_model_capacity(root, prompt.spec.model_id)
    return Samples(read_json(conversation_path), attributes, flow, capacity)


def plan_previews(
    plan: Plan, desired: Sequence[Prompt | ContextPolicy | Any], roots: Sequence[Path]
) -> dict[ResourceKey, str]:
    """Rendered before/after diffs of every prompt the plan creates or updates."""
    root = next((r for r in roots if (r / "samples").is_dir()), None)
    if root is None:
        return {}
    prompts = {m.metadata.name: m for m in desired if isinstance(m, Prompt)}
    policies = {m.metadata.name: m for m in desired if isinstance(m, ContextPolicy)}
    out: dict[ResourceKey, str] = {}
    for change in plan.changes:
        if change.key.kind is not Kind.PROMPT or change.action not in (Action.CREATE, Action.UPDATE):
            continue
        after = prompts.get(change.key.name)
        if after is None:
            continue
        policy = policies.get(after.spec.context_policy or "")
        try:
            samples = samples_for(after, policy, root)
        except (ConfigError, RenderError) as exc:
            out[change.key] = f"(preview unavailable: {exc})"
            continue
        if samples is None:
            continue
        before = None
        if change.before is not None:
            try:
                before = Prompt.model_validate(
                    {
                        "apiVersion": after.api_version,
                        "kind": "Prompt",
                        "metadata": {"name": change.key.name},
                        "spec": change.before["spec"],
                    }
                )
            except ValueError:
                before = None
        from reconciler.prompting import preview

        out[change.key] = preview(
            before,
            after,
            policy,
            samples.conversation,
            samples.attributes,
            samples.flow_inputs,
            samples.capacity,
        )
    return out
