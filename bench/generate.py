"""Synthetic but valid desired state for benchmarks: N resources of mixed kinds with references.

Shares: 40% function definitions, 20% context policies, 40% prompts; each prompt references two
functions and one policy, so the plan's dependency order has real work to do. Sizes follow the
example manifests (descriptions of a sentence or two, 4-6 parameters, templates of ~1 KB).
Deterministic for a given (n, seed).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml

API_VERSION = "reconciler.genesys.cloud/v1"
MODELS = ("openai-gpt-4-turbo", "genesys-llm-v4")
WORDS = (
    "account",
    "billing",
    "order",
    "refund",
    "delivery",
    "customer",
    "status",
    "invoice",
    "balance",
    "payment",
    "shipment",
    "address",
    "loyalty",
    "ticket",
    "agent",
    "queue",
    "priority",
    "region",
)


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _function(i: int, rng: random.Random) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for p in range(rng.randint(4, 6)):
        kind = rng.choice(("string", "string", "number", "integer", "boolean"))
        prop: dict[str, Any] = {"type": kind, "description": _sentence(rng, 6)}
        if kind == "string" and rng.random() < 0.3:
            prop["enum"] = ["low", "medium", "high"]
        props[f"param_{p}"] = prop
    return {
        "apiVersion": API_VERSION,
        "kind": "FunctionDefinition",
        "metadata": {"name": f"func-{i:05d}", "labels": {"team": f"team-{i % 7}"}},
        "spec": {
            "name": f"lookup_{i}",
            "description": _sentence(rng, 14),
            "timeoutMillis": 2000 + i % 5000,
            "parameters": {"type": "object", "properties": props, "required": ["param_0"]},
        },
    }


def _policy(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ContextPolicy",
        "metadata": {"name": f"policy-{i:05d}", "labels": {"team": f"team-{i % 7}"}},
        "spec": {
            "modelId": MODELS[i % 2],
            "tokenLimits": {"hardLimit": 16000, "softLimit": 12000},
            "retention": {
                "persistSystemPrompts": True,
                "retainUserPii": False,
                "autoCompactThreshold": 0.8,
                "evictionPolicy": rng.choice(("lru", "fifo", "summarize")),
            },
            "piiMasking": [
                {"name": "email", "pattern": r"[\w.+-]+@[\w-]+\.[\w.]+", "replacement": "[EMAIL]"},
                {
                    "name": "card",
                    "pattern": r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b",
                    "replacement": "[CARD]",
                },
            ],
            "metadataFields": ["conversationId", "queue", "customer"],
        },
    }


def _prompt(i: int, rng: random.Random, functions: list[str], policies: list[str]) -> dict[str, Any]:
    body = " ".join(_sentence(rng, 12) for _ in range(8))
    template = (
        f"You are assistant {i}. {body}\nCustomer: {{{{ customer_name }}}}\n"
        "{% for m in messages %}{{ m.from }}: {{ m.text }}\n{% endfor %}"
    )
    spec: dict[str, Any] = {
        "version": f"1.{i % 10}.0",
        "modelId": MODELS[i % 2],
        "maxTokens": 4000,
        "template": template,
        "variables": [
            {"name": "customer_name", "type": "string", "required": True},
            {"name": "messages", "type": "array", "required": False},
        ],
        "contextRules": [{"source": "conversation_history", "maxTokens": 1500, "injectionPoint": "user"}],
    }
    if functions:
        spec["functions"] = sorted(rng.sample(functions, min(2, len(functions))))
    if policies:
        spec["contextPolicy"] = rng.choice(policies)
    return {
        "apiVersion": API_VERSION,
        "kind": "Prompt",
        "metadata": {"name": f"prompt-{i:05d}", "labels": {"team": f"team-{i % 7}"}},
        "spec": spec,
    }


def generate(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """N manifest documents: functions and policies first, then prompts referring to them."""
    rng = random.Random(seed)
    n_functions, n_policies = n * 2 // 5, n // 5
    functions = [_function(i, rng) for i in range(n_functions)]
    policies = [_policy(i, rng) for i in range(n_policies)]
    names_f = [f["metadata"]["name"] for f in functions]
    names_p = [p["metadata"]["name"] for p in policies]
    prompts = [_prompt(i, rng, names_f, names_p) for i in range(n - n_functions - n_policies)]
    return functions + policies + prompts


def write_manifests(documents: list[dict[str, Any]], folder: Path, per_file: int = 100) -> None:
    """Write the documents as multi-document YAML files, ``per_file`` documents each."""
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(documents), per_file):
        chunk = documents[start : start + per_file]
        text = yaml.safe_dump_all(chunk, sort_keys=False, width=120)
        (folder / f"resources-{start // per_file:04d}.yaml").write_text(text, encoding="utf-8")
