"""Who is calling: bearer tokens scoped to a project with a role, checked per request.

Roles: ``ingest`` (create runs, send steps), ``read`` (runs, series, compare, metrics), ``admin``
(everything in its project, including deleting runs). With auth off (loopback only) every caller
is an anonymous admin of every project. Tokens are never logged: only their short prefix is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .errors import Forbidden, NotFound, Unauthorized
from .storage.db import Database
from .storage.tokens import lookup_token

__all__ = ["ANONYMOUS", "Principal", "TokenCache", "authenticate"]

_CACHE_TTL = 5.0  # seconds a looked-up token is trusted before asking the database again (revocation lag)


@dataclass(frozen=True)
class Principal:
    """The caller: ``project`` is None when auth is off (any project)."""

    project: str | None
    role: str
    token_prefix: str | None = None

    def allows(self, role: str) -> bool:
        return self.role == "admin" or self.role == role

    def require(self, role: str, project: str | None) -> None:
        """Raise 403 unless this caller has ``role`` (or admin) in ``project`` (None: any project).

        For a project the caller named itself (a query or body field); a stored resource's project
        goes through :meth:`require_visible`, so that nothing about other projects leaks.
        """
        if not self.allows(role):
            raise Forbidden(f"this token has role {self.role!r}; {role!r} or 'admin' is needed", ["header", "authorization"])
        if not self.sees(project):
            raise Forbidden(f"this token is for project {self.project!r} only", ["header", "authorization"])

    def sees(self, project: str | None) -> bool:
        """Whether this caller may know of things in ``project`` (None: service-wide things, seen by all)."""
        return self.project is None or project is None or project == self.project

    def require_visible(self, role: str, project: str | None, hidden: NotFound) -> None:
        """As :meth:`require` for a stored resource of ``project``, except that a resource in a project
        this caller may not see is answered with ``hidden``: the same 404 as one that does not exist."""
        if not self.sees(project):
            raise hidden
        self.require(role, project)


ANONYMOUS = Principal(project=None, role="admin")


class TokenCache:
    """A few seconds of memory for token lookups, so each request does not cost a query."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, Principal | None]] = {}

    def get(self, db: Database, token: str) -> Principal | None:
        now = time.monotonic()
        hit = self._items.get(token)
        if hit is not None and now - hit[0] < _CACHE_TTL:
            return hit[1]
        with db.read() as session:
            info = lookup_token(session, token=token)
        principal = None if info is None else Principal(info.project, info.role, info.prefix)
        if len(self._items) > 10_000:
            self._items.clear()
        self._items[token] = (now, principal)
        return principal


def authenticate(db: Database, cache: TokenCache, authorization: str | None) -> Principal:
    """The principal for an ``Authorization`` header; 401 when missing, malformed or unknown."""
    if not authorization:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)", ["header", "authorization"])
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization must be 'Bearer <token>'", ["header", "authorization"])
    principal = cache.get(db, token)
    if principal is None:
        raise Unauthorized("unknown or revoked token", ["header", "authorization"])
    return principal
