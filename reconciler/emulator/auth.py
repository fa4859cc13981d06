"""OAuth client credentials: issuing bearer tokens and checking them (and their scopes) per request,
and the admin token that guards `/__emulator/*` when the emulator listens beyond loopback.

Secrets are compared as bytes in constant time, and an unknown client id costs the same
comparison as a known one (against a dummy secret), so timing tells nothing about which ids exist.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import uuid
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.emulator.config import ALL_SCOPES
from reconciler.emulator.platform import organization_body
from reconciler.emulator.state import (
    FUNCTIONS,
    NO_STORE,
    POLICIES,
    PROMPTS,
    ApiProblem,
    State,
    Token,
    error_response,
    read_body,
)

READ_SCOPE = {FUNCTIONS: "ai:llm:function-definition:read", PROMPTS: "ai:llm:manage", POLICIES: "ai:llm:read"}
WRITE_SCOPE = {
    FUNCTIONS: "ai:llm:function-definition:write",
    PROMPTS: "ai:llm:manage",
    POLICIES: "ai:llm:write",
}
TOKEN_FORM_LIMIT = 16 * 1024
BEARER_CHALLENGE = 'Bearer realm="Genesys Cloud"'
BASIC_CHALLENGE = 'Basic realm="Genesys Cloud login", charset="UTF-8"'
ADMIN_CHALLENGE = 'Bearer realm="reconciler emulator admin"'
# Compared against when the client id is unknown, so both paths take the same time.
_DUMMY_SECRET = secrets.token_bytes(32)


def authorize(state: State, request: Request, scope: str) -> Token:
    header = request.headers.get("authorization", "")
    if not header[:7].lower() == "bearer ":
        raise ApiProblem(
            401,
            "Authentication required: send a bearer token",
            "authentication.required",
            headers={"WWW-Authenticate": BEARER_CHALLENGE},
        )
    access = header[7:].strip()
    token = state.tokens.get(access)
    if token is not None and token.expires_at <= state.now():
        del state.tokens[access]  # evicted: an expired token is never valid again
        token = None
    if token is None:
        raise ApiProblem(
            401,
            "The bearer token is invalid or has expired",
            "bad.credentials",
            headers={"WWW-Authenticate": f'{BEARER_CHALLENGE}, error="invalid_token"'},
        )
    if scope and scope not in token.scopes:
        raise ApiProblem(403, f"Missing the permission (scope) {scope}", "missing.permissions")
    return token


def _evict_expired(state: State, now: float) -> None:
    for access in [a for a, t in state.tokens.items() if t.expires_at <= now]:
        del state.tokens[access]


def _credentials(header: str) -> tuple[str, bytes] | None:
    """client id and secret (as bytes) from a Basic header; None when it is malformed."""
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip().encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError):
        return None
    client_id, colon, secret = decoded.partition(":")
    return (client_id, secret.encode("utf-8")) if colon else None


def _oauth_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(
        {"error": error, "description": description},
        status_code=status,
        headers={"ININ-Correlation-Id": str(uuid.uuid4()), **NO_STORE, **(headers or {})},
    )


async def issue_token(state: State, request: Request) -> Response:
    try:
        raw = await read_body(request, TOKEN_FORM_LIMIT)
    except ApiProblem as problem:
        return error_response(problem)
    credentials = _credentials(request.headers.get("authorization", ""))
    client_id, given = credentials or ("", b"")
    known = state.config.clients.get(client_id)
    expected = known[0].encode("utf-8") if known is not None else _DUMMY_SECRET
    matches = hmac.compare_digest(expected, given)
    if credentials is None or known is None or not matches:
        return _oauth_error(
            401,
            "invalid_client",
            "client authentication failed",
            {"WWW-Authenticate": BASIC_CHALLENGE},
        )
    # A urlencoded form is a few lines with the stdlib; no need for python-multipart.
    form = {k: v[0] for k, v in parse_qs(raw.decode("latin-1")).items()}
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "use client_credentials")
    requested = frozenset(str(form.get("scope") or "").split())
    unknown = sorted(requested - ALL_SCOPES)
    if unknown:
        return _oauth_error(400, "invalid_scope", f"unknown scope(s): {' '.join(unknown)}")
    scopes = known[1] & requested if requested else known[1]
    now = state.now()
    _evict_expired(state, now)
    access = secrets.token_urlsafe(32)
    state.tokens[access] = Token(client_id, scopes, now + state.config.token_lifetime_s)
    return JSONResponse(
        {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": state.config.token_lifetime_s,
            "scope": " ".join(sorted(scopes)),  # RFC 6749 5.1: what was granted
        },
        headers=NO_STORE,
    )


def check_admin(state: State, request: Request) -> None:
    """When the emulator has an admin token, `/__emulator/*` needs it (else 401)."""
    expected = state.config.admin_token
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "surrogateescape")):
        raise ApiProblem(
            401,
            "the emulator's admin endpoints need its admin token (Authorization: Bearer <token>)",
            "authentication.required",
            headers={"WWW-Authenticate": ADMIN_CHALLENGE},
        )


async def organization(state: State, request: Request, token: Token) -> Response:
    """GET /api/v2/organizations/me: the org the token belongs to (any valid token may ask)."""
    return JSONResponse(organization_body(state.store.org_id()))
