"""The web UI at ``/`` and the offline API docs at ``/docs``: static files shipped in the package.

The page is plain ES modules plus the vendored uPlot build (``static/vendor``); it reads only the
public REST API under ``/api/v1``, with a bearer token the user types once (kept in the browser's
session storage; no cookies). Swagger UI's assets come from the ``fastapi-offline`` package, so
``/docs`` needs no internet. Every UI response carries a Content-Security-Policy that allows
scripts, styles and connections from this origin only (no inline scripts).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "DOCS_CSP", "install_ui"]

STATIC = Path(__file__).parent / "static"
# The page: own-origin scripts, styles, images and API calls only; no frames, no plugins, no forms off-site.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# Swagger UI sets inline style attributes while rendering; its scripts stay own-origin only.
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sapo-monitor API</title>
<link rel="icon" href="/docs/assets/favicon.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/ui/docs.js"></script></body></html>
"""


def _docs_assets() -> Path:
    import fastapi_offline  # the Swagger UI build, as a package (no CDN)

    return Path(fastapi_offline.__file__).parent / "static"


class _SecurityHeaders:
    """ASGI middleware: the CSP (and no sniffing, no referrer) on the UI's and the docs' responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/api/") or path in ("/metrics", "/healthz", "/readyz", "/openapi.json") or not path:
            await self.app(scope, receive, send)
            return
        policy = DOCS_CSP if path.startswith("/docs") else CSP

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", policy.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)


def install_ui(app: FastAPI) -> None:
    """Serve the UI at ``/`` (assets under ``/ui/``) and Swagger UI at ``/docs`` from local files.

    The app must be built with ``docs_url=None`` (FastAPI's own page loads Swagger UI from a CDN)."""
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")
    app.mount("/docs/assets", StaticFiles(directory=_docs_assets()), name="docs-assets")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                            headers={"cache-control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_DOCS_HTML)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> RedirectResponse:
        return RedirectResponse("/docs")

    app.add_middleware(_SecurityHeaders)
