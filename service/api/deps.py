"""Dependencies the routers share: the database, settings and the calling principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from ..auth import ANONYMOUS, Principal, TokenCache, authenticate
from ..settings import Settings
from ..storage.db import Database

__all__ = ["AuthDep", "DbDep", "SettingsDep"]


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_principal(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    settings: Settings = request.app.state.settings
    if not settings.auth_enabled:
        return ANONYMOUS
    cache: TokenCache = request.app.state.token_cache
    return authenticate(request.app.state.db, cache, authorization)


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
AuthDep = Annotated[Principal, Depends(get_principal)]
