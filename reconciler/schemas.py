"""JSON Schemas (draft 2020-12) for the manifest kinds and reconciler.yaml, made from the models.

Editors use them through the yaml-language-server modeline at the top of each manifest. They are
generated, never edited: `make schemas` writes them and a test fails when they are stale.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from reconciler.models import MANIFEST_MODELS, Kind, ProjectConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://reconciler.genesys.cloud/schemas/"


def _schema(model: type[BaseModel], file: str, title: str) -> dict[str, Any]:
    body = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": SCHEMA_DIALECT, "$id": BASE_ID + file, **body, "title": title}


def schema_files() -> dict[str, str]:
    """File name -> JSON text, with stable key order and a trailing newline."""
    docs = {
        f"{kind.value.lower()}.schema.json": _schema(
            MANIFEST_MODELS[kind], f"{kind.value.lower()}.schema.json", kind.value
        )
        for kind in Kind
    }
    docs["reconciler.schema.json"] = _schema(ProjectConfig, "reconciler.schema.json", "reconciler.yaml")
    return {name: json.dumps(doc, indent=2, sort_keys=True) + "\n" for name, doc in sorted(docs.items())}
