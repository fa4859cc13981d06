"""The emulator's OpenAPI 3.0 document, built from the same endpoint table that routes requests,
so the document cannot list a path the app does not serve (or miss one it does)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

ERROR = {"$ref": "#/components/schemas/Error"}
ANY_OBJECT = {"type": "object", "additionalProperties": True}
LISTING = {
    "type": "object",
    "required": ["entities", "pageSize", "pageNumber", "total", "pageCount"],
    "properties": {
        "entities": {"type": "array", "items": ANY_OBJECT},
        "pageSize": {"type": "integer"},
        "pageNumber": {"type": "integer"},
        "total": {"type": "integer"},
        "pageCount": {"type": "integer"},
        "selfUri": {"type": "string"},
        "firstUri": {"type": "string"},
        "lastUri": {"type": "string"},
        "nextUri": {"type": "string"},
        "previousUri": {"type": "string"},
    },
}


class EndpointLike(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def template(self) -> str: ...
    @property
    def scope(self) -> str: ...


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": "Genesys error body", "content": {"application/json": {"schema": ERROR}}}
        for s in statuses
    }


def _operation(e: EndpointLike) -> dict[str, Any]:
    params = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
        for n in re.findall(r"{(\w+)}", e.template)
    ]
    listing = (
        e.method == "GET"
        and (not e.template.endswith("}") or e.template.endswith("versions"))
        and "capacity" not in e.template
        and not e.template.endswith("/me")
    )
    if listing:
        params += [
            {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
            {"name": "pageNumber", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        ]
        if e.template.endswith("/prompts"):
            params.append({"name": "name", "in": "query", "schema": {"type": "string"}})
    headers = [
        {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
        for h in (
            ("If-Match", "If-None-Match")
            if e.method in ("PUT", "DELETE")
            else ("If-None-Match",)
            if e.method == "GET" and not listing
            else ()
        )
    ]
    ok = {
        "description": "OK",
        "content": {"application/json": {"schema": LISTING if listing else ANY_OBJECT}},
    }
    responses: dict[str, Any] = {"200": ok}
    responses |= _errors(400, 401, 403, 429, 500, 502, 503, 504)
    if e.template.endswith("}") or e.template.endswith("capacity") or e.template.endswith("versions"):
        responses |= _errors(404)
    if e.method == "GET" and not listing:
        responses["304"] = {"description": "Not modified"}
    if e.method in ("PUT", "POST"):
        responses["201"] = {"description": "Created", "content": {"application/json": {"schema": ANY_OBJECT}}}
        responses |= _errors(409, 412, 413, 415, 428)
    if e.method == "DELETE":
        responses = {"204": {"description": "Deleted"}} | _errors(
            401, 403, 404, 412, 428, 429, 500, 502, 503, 504
        )
    operation: dict[str, Any] = {
        "parameters": params + headers,
        "responses": responses,
        "security": [{"oauth": [e.scope] if e.scope else []}],
    }
    if e.method in ("PUT", "POST"):
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ANY_OBJECT}}}
    return operation


def openapi_document(endpoints: Sequence[EndpointLike]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.template, {})[e.method.lower()] = _operation(e)
    paths["/oauth/token"] = {
        "post": {
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                                "scope": {"type": "string"},
                            },
                            "required": ["grant_type"],
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "token",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["access_token", "token_type", "expires_in"],
                                "properties": {
                                    "access_token": {"type": "string"},
                                    "token_type": {"type": "string"},
                                    "expires_in": {"type": "integer"},
                                },
                            }
                        }
                    },
                },
                "400": {"description": "bad grant", "content": {"application/json": {"schema": ANY_OBJECT}}},
                "401": {"description": "bad client", "content": {"application/json": {"schema": ANY_OBJECT}}},
            },
            "security": [{"basic": []}],
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Genesys Cloud LLM Gateway (reconciler emulator)", "version": "1.0"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "oauth": {
                    "type": "oauth2",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": "/oauth/token",
                            "scopes": {e.scope: e.scope for e in endpoints if e.scope},
                        }
                    },
                },
                "basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["message", "code", "status", "contextId"],
                    "properties": {
                        "message": {"type": "string"},
                        "code": {"type": "string"},
                        "status": {"type": "integer"},
                        "messageWithParams": {"type": "string"},
                        "messageParams": {"type": "object"},
                        "contextId": {"type": "string"},
                        "details": {"type": "array", "items": {"type": "object"}},
                        "errors": {"type": "array"},
                    },
                }
            },
        },
    }
