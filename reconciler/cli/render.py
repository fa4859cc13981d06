"""`reconciler render`: the effective prompt for a sample conversation, with a token table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from reconciler.cli import main
from reconciler.cli.options import env_option, format_option, run
from reconciler.client.connect import open_client
from reconciler.errors import ConfigError
from reconciler.models import ContextPolicy, Kind, Prompt, ResourceKey
from reconciler.previews import flow_inputs_file, read_json
from reconciler.prompting import build_prompt, token_table
from reconciler.workspace import open_workspace


@main.command()
@click.argument("prompt_name", metavar="PROMPT")
@click.argument("paths", nargs=-1, type=click.Path())
@env_option
@click.option(
    "--conversation",
    "conversation_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A conversation as JSON (the shape of GET /api/v2/conversations/{id}).",
)
@click.option("--conversation-id", help="Fetch the conversation from the live org.")
@click.option(
    "--attributes",
    "attributes_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Attribute values (JSON object), typed by the flow's input definitions.",
)
@click.option(
    "--flow-inputs",
    "flow_inputs_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The flow's input definitions as JSON (default: samples/flows/<flowId>.json, or live).",
)
@click.option("--variant", help="Render this A/B variant's template instead of the main one.")
@format_option("text", "json")
def render(
    prompt_name: str,
    paths: tuple[str, ...],
    env_name: str | None,
    conversation_file: Path | None,
    conversation_id: str | None,
    attributes_file: Path | None,
    flow_inputs_path: Path | None,
    variant: str | None,
    output_format: str,
) -> None:
    """Show PROMPT as the gateway would build it: PII masked, history trimmed, template rendered."""
    if (conversation_file is None) == (conversation_id is None):
        raise ConfigError("give exactly one of --conversation FILE or --conversation-id ID")
    ws = open_workspace(env_name, paths)
    found = ws.manifests.by_key().get(ResourceKey(Kind.PROMPT, prompt_name))
    if found is None or not isinstance(found.manifest, Prompt):
        names = sorted(k.name for k in ws.manifests.by_key() if k.kind is Kind.PROMPT)
        raise ConfigError(f"no Prompt named {prompt_name!r} (prompts: {', '.join(names) or 'none'})")
    prompt = found.manifest
    policy_loaded = ws.manifests.by_key().get(
        ResourceKey(Kind.CONTEXT_POLICY, prompt.spec.context_policy or "")
    )
    policy = (
        policy_loaded.manifest
        if policy_loaded and isinstance(policy_loaded.manifest, ContextPolicy)
        else None
    )
    flow_id = policy.spec.flow_id if policy else None
    root = Path(found.source.file).resolve().parent
    while root != root.parent and not (root / "samples").is_dir():
        root = root.parent

    async def live() -> tuple[dict[str, Any], dict[str, str] | None]:
        async with open_client(ws.connection) as client:
            conversation = await client.conversation(conversation_id) if conversation_id else {}
            inputs = await client.flow_inputs(flow_id) if flow_id else None
            return conversation, inputs

    attributes = read_json(attributes_file) if attributes_file else None
    inputs: dict[str, str] | None = None
    if flow_inputs_path is not None:
        inputs = {str(d["name"]): str(d.get("dataType", "string")) for d in read_json(flow_inputs_path)}
    elif conversation_file is not None:
        inputs = flow_inputs_file(root, flow_id)
    if conversation_id is not None:
        conversation, live_inputs = run(live())
        inputs = inputs or live_inputs
    else:
        assert conversation_file is not None
        conversation = read_json(conversation_file)
    if attributes and inputs is None:
        raise ConfigError(
            "attributes need the flow's input definitions: give --flow-inputs, or a policy "
            "with a flowId and samples/flows/<flowId>.json"
        )
    rendered = build_prompt(
        prompt.spec, policy.spec if policy else None, conversation, attributes, inputs, variant
    )
    if output_format == "json":
        click.echo(
            json.dumps(
                {
                    "prompt": rendered.text,
                    "variant": rendered.variant,
                    "tokens": {r.part: {"tokens": r.tokens, "budget": r.budget} for r in rendered.rows},
                    "limits": dict(rendered.limits),
                    "masked_count": rendered.masked,
                    "dropped_messages": rendered.dropped_messages,
                },
                indent=2,
            )
        )
        return
    click.echo(ws.redactor.text(rendered.text).rstrip("\n"))
    click.echo("")
    click.echo(token_table(rendered))
