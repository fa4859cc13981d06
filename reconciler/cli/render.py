"""`reconciler render`: the effective prompt for a conversation, with a token table.

This module only gathers the inputs (manifests, the conversation and attributes from files or
the live org, the flow's input definitions, the model's capacity) and prints; building the prompt is
``reconciler.prompting`` (pure). It never writes anything, locally or live.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler.cli import main
from reconciler.cli.options import env_option, format_option, given_variables, run, var_option
from reconciler.errors import ConfigError, RenderError
from reconciler.kinds import flow_inputs_from
from reconciler.models import ContextPolicy, Kind, Prompt, ResourceKey
from reconciler.previews import read_json, sample_flow_inputs, sample_model_capacity
from reconciler.rules import check_capacity
from reconciler.workspace import Workspace, connect, open_settings

if TYPE_CHECKING:
    from reconciler.prompting import ModelCapacity


def _find_prompt(ws: Workspace, name: str) -> tuple[Prompt, ContextPolicy | None, Path]:
    """The prompt, its context policy, and the folder its file is in."""
    by_key = ws.manifests.by_key()
    found = by_key.get(ResourceKey(Kind.PROMPT, name))
    if found is None or not isinstance(found.manifest, Prompt):
        names = sorted(k.name for k in by_key if k.kind is Kind.PROMPT)
        raise ConfigError(f"no Prompt named {name!r} (prompts: {', '.join(names) or 'none'})")
    prompt = found.manifest
    policy = None
    if prompt.spec.context_policy:
        loaded = by_key.get(ResourceKey(Kind.CONTEXT_POLICY, prompt.spec.context_policy))
        if loaded is None or not isinstance(loaded.manifest, ContextPolicy):
            # Rendering without it would show PII unmasked and the history untrimmed.
            raise ConfigError(
                f"{found.source.file}:{found.source.line}: Prompt {name!r} names contextPolicy "
                f"{prompt.spec.context_policy!r}, which is not among the manifests loaded"
            )
        policy = loaded.manifest
    return prompt, policy, Path(found.source.file).resolve().parent


@main.command()
@click.argument("prompt_name", metavar="PROMPT")
@click.argument("paths", nargs=-1, type=click.Path())
@env_option
@var_option
@click.option(
    "--conversation",
    "conversation_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A conversation as JSON (the shape of GET /api/v2/conversations/{id}).",
)
@click.option("--conversation-id", metavar="ID", help="Fetch the conversation from the live org.")
@click.option(
    "--attributes",
    "attributes_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Attribute values (JSON object), typed by the flow's input definitions.",
)
@click.option(
    "--flow-inputs",
    "flow_inputs_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The flow's input definitions, a JSON list of {name, dataType} "
    "(default: samples/flows/<flowId>.json, else the live flow with --conversation-id).",
)
@click.option(
    "--model-capacity",
    "capacity_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The model's capacity, the JSON of GET /api/v2/ai/llm/models/{id}/capacity (default: "
    "samples/models/<modelId>.json, else the live model with --conversation-id). It says whether "
    "the model compacts history.",
)
@click.option(
    "--inspect-attributes",
    is_flag=True,
    help="Instead of rendering, report the --attributes against the flow's declared inputs: "
    "missing inputs, extra keys (ignored by the flow), expected and actual type per key.",
)
@click.option("--variant", metavar="NAME", help="Render this A/B variant's template instead of the main one.")
@format_option("text", "json")
def render(
    prompt_name: str,
    paths: tuple[str, ...],
    env_name: str | None,
    conversation_file: Path | None,
    conversation_id: str | None,
    attributes_file: Path | None,
    flow_inputs_file: Path | None,
    capacity_file: Path | None,
    inspect_attributes: bool,
    variant: str | None,
    output_format: str,
) -> None:
    """Show PROMPT as the gateway would build it for a conversation: metadata flattened,
    attributes typed, PII masked, history compacted or trimmed to the budget, template rendered
    strictly in a bounded sandbox; then the token table.

    Exit codes: 0 rendered; 1 when it cannot be rendered, when the model's capacity refuses the
    policy, or when the total is over the policy's hard limit (the prompt and table are printed
    first). With --inspect-attributes: 0 with the report, whatever it finds.
    """
    # Imported here, not at the top: every other command starts without Jinja2's sandbox.
    from reconciler.prompting import build_prompt, model_capacity_from, token_table
    from reconciler.prompting import inspect_attributes as inspect

    # The prompt first: `render nope` is about the prompt, whatever else is missing.
    ws = open_settings(env_name, paths, variables=given_variables()).load()
    prompt, policy, prompt_dir = _find_prompt(ws, prompt_name)
    if inspect_attributes:
        if attributes_file is None:
            raise ConfigError("--inspect-attributes needs --attributes FILE (the payload to inspect)")
    elif (conversation_file is None) == (conversation_id is None):
        raise ConfigError("give exactly one of --conversation FILE or --conversation-id ID")
    flow_id = policy.spec.flow_id if policy else None
    model_id = prompt.spec.model_id

    attributes = read_json(attributes_file) if attributes_file else None
    inputs: dict[str, str] | None = None
    if flow_inputs_file is not None:
        inputs = flow_inputs_from(read_json(flow_inputs_file), str(flow_inputs_file))
    elif flow_id:
        inputs = sample_flow_inputs(prompt_dir, flow_id)
    capacity: ModelCapacity | None = None
    if capacity_file is not None:
        capacity = model_capacity_from(read_json(capacity_file), str(capacity_file))
    else:
        capacity = sample_model_capacity(prompt_dir, model_id)

    conversation: Any = None
    live = conversation_id is not None or (inspect_attributes and inputs is None and flow_id is not None)
    if live:
        want_flow = flow_id if attributes is not None and inputs is None else None
        want_model = model_id if capacity is None and not inspect_attributes else None

        async def fetch() -> tuple[Any, dict[str, str] | None, ModelCapacity | None]:
            async with connect(ws.connection) as client:
                found = await client.conversation(conversation_id) if conversation_id else None
                live_inputs = await client.flow_inputs(want_flow) if want_flow else None
                live_capacity = None
                if want_model:
                    for entry in await client.list_raw("/api/v2/ai/llm/models"):
                        if entry.get("model_id", entry.get("id")) == want_model:
                            live_capacity = model_capacity_from(entry, f"model {want_model}")
                return found, live_inputs, live_capacity

        conversation, live_inputs, live_capacity = run(fetch())
        inputs = inputs if inputs is not None else live_inputs
        capacity = capacity if capacity is not None else live_capacity
    elif conversation_file is not None:
        conversation = read_json(conversation_file)

    if attributes is not None and inputs is None:
        where = f"flow {flow_id!r} was not found" if flow_id else "the context policy names no flowId"
        raise ConfigError(
            f"attributes are typed by the flow's input definitions, and {where}: give --flow-inputs FILE "
            "(a JSON list of {name, dataType})"
        )
    if inspect_attributes:
        assert inputs is not None
        report = inspect(attributes, inputs)
        if output_format == "json":
            click.echo(json.dumps(ws.redactor.value(report.to_json()), indent=2))
        else:
            click.echo(ws.redactor.text(report.to_text(f"Prompt {prompt_name}, flow {flow_id}")))
        return

    if capacity is not None:
        problems = check_capacity(
            [m for m in (prompt, policy) if m is not None], {capacity.model_id: capacity.to_wire()}
        )
        if problems:
            raise RenderError("; ".join(problems))
    rendered = build_prompt(
        prompt.spec,
        policy.spec if policy else None,
        conversation,
        attributes,
        inputs,
        variant,
        name=prompt_name,
        capacity=capacity,
    )
    if output_format == "json":
        click.echo(json.dumps(ws.redactor.value(rendered.to_json()), indent=2))
    else:
        click.echo(ws.redactor.text(rendered.text).rstrip("\n"))
        click.echo("")
        click.echo(token_table(rendered))
    if rendered.tokens.over_hard_limit:
        raise RenderError(f"prompt {prompt_name!r}: {rendered.tokens.hard_limit_problem()}")
