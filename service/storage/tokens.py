"""API tokens: created once (the secret is shown then and never stored), looked up by hash."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from .models import ApiToken, Project
from .runs import ensure_project

__all__ = ["ROLES", "TOKEN_PREFIX", "TokenInfo", "create_token", "hash_token", "list_tokens", "lookup_token",
           "revoke_token"]

ROLES = ("ingest", "read", "admin")
TOKEN_PREFIX = "sapo_"


@dataclass(frozen=True)
class TokenInfo:
    id: int
    project: str
    role: str
    prefix: str
    description: str | None
    created_at: float
    revoked_at: float | None


def hash_token(token: str) -> str:
    """SHA-256 hex of a token: tokens are 256-bit random, so a fast hash is enough (no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, *, project: str, role: str, description: str | None = None) -> tuple[str, TokenInfo]:
    """A new token for ``project`` with ``role``; returns the secret (shown once) and its record."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    pid = ensure_project(session, project)
    row = ApiToken(
        project_id=pid,
        role=role,
        token_hash=hash_token(secret),
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        description=description,
        created_at=time.time(),
    )
    session.add(row)
    session.flush()
    return secret, TokenInfo(row.id, project, role, row.prefix, description, row.created_at, None)


def lookup_token(session: Session, *, token: str) -> TokenInfo | None:
    """The live (not revoked) token with this secret, or None."""
    row = session.execute(
        select(ApiToken, Project.name)
        .join(Project, Project.id == ApiToken.project_id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    t, project = row
    return TokenInfo(t.id, project, t.role, t.prefix, t.description, t.created_at, t.revoked_at)


def list_tokens(session: Session, *, project: str | None = None) -> list[TokenInfo]:
    q = select(ApiToken, Project.name).join(Project, Project.id == ApiToken.project_id).order_by(ApiToken.id)
    if project is not None:
        q = q.where(Project.name == project)
    return [
        TokenInfo(t.id, p, t.role, t.prefix, t.description, t.created_at, t.revoked_at)
        for t, p in session.execute(q)
    ]


def revoke_token(session: Session, *, token_id: int) -> bool:
    res = cast("CursorResult[Any]", session.execute(  # an UPDATE returns a CursorResult
        update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None)).values(revoked_at=time.time())
    ))
    return bool(res.rowcount)


def count_tokens(session: Session) -> int:
    return len(session.execute(select(ApiToken.id).where(ApiToken.revoked_at.is_(None)).limit(1)).all())
