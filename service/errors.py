"""The service's error tree, and how each error becomes an HTTP response.

::

    ServiceError                  base; never escapes as a 500
    ├── BadRequest (422)          input is well-formed HTTP but invalid; ``loc`` names the field
    ├── PayloadTooLarge (413)     a body or a batch above a limit; the message names the limit
    ├── Unauthorized (401)        no token, or a token we do not know
    ├── Forbidden (403)           a known token without the role, or naming a project not its own
    ├── NotFound (404)            an unknown run or rule, or one in a project the token may not see
    └── NotReady (503)            the database is unreachable or its schema is not current

Bodies follow FastAPI's validation shape, ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``,
so one client-side parser reads every error.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "BadRequest",
    "ErrorDetail",
    "ErrorOut",
    "Forbidden",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "ServiceError",
    "Unauthorized",
    "install_handlers",
]


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every 4xx/5xx body the service writes itself."""

    detail: list[ErrorDetail]


class ServiceError(Exception):
    status_code = 400
    error_type = "error"

    def __init__(self, msg: str, loc: Sequence[str | int] = ()) -> None:
        super().__init__(msg)
        self.msg = msg
        self.loc = list(loc)

    def body(self) -> dict:
        return {"detail": [{"loc": self.loc, "msg": self.msg, "type": self.error_type}]}


class BadRequest(ServiceError):
    status_code = 422
    error_type = "value_error"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "too_large"


class Unauthorized(ServiceError):
    status_code = 401
    error_type = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    error_type = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    error_type = "not_found"


class NotReady(ServiceError):
    status_code = 503
    error_type = "not_ready"


def install_handlers(app: FastAPI) -> None:
    """Turn every :class:`ServiceError` into its status and body."""

    async def _handle(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)

    async def _handle_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        # FastAPI answers a body it cannot decode (bad UTF-8, say) with a bare 400; every route
        # documents 422 for bad bodies, so say the same thing the same way.
        if exc.status_code == 400:
            body = BadRequest(f"the request body could not be read as JSON: {exc.detail}", loc=["body"]).body()
            return JSONResponse(body, status_code=BadRequest.status_code)
        return await http_exception_handler(request, exc)

    app.add_exception_handler(ServiceError, _handle)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
