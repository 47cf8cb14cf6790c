"""HTTP to the service: one PUT per run, one POST per batch. The seam that delivery talks through.

``Transport`` is the protocol; ``HttpTransport`` is the real one (httpx). Tests run it against a real
server on 127.0.0.1. Every failure becomes a :class:`TransportError` whose ``retryable`` flag tells
delivery whether to back off and retry (network errors, 408, 429, 5xx) or to stop trying that batch.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx
from sapo_monitor.client.errors import TransportError

__all__ = ["HttpTransport", "Transport", "classify_status"]

RETRYABLE_STATUS = frozenset({408, 429})


class Transport(Protocol):
    def put_run(self, run_id: str, doc: dict[str, Any]) -> None: ...

    def post_steps(self, run_id: str, body: bytes) -> dict[str, Any] | None:
        """POST one batch; returns the service's JSON answer (None when it is not a JSON object)."""
        ...

    def close(self) -> None: ...


def classify_status(status: int) -> bool | None:
    """None for success, True for a status worth retrying, False for a final rejection."""
    if 200 <= status < 300:
        return None
    return status in RETRYABLE_STATUS or status >= 500


class HttpTransport:
    """Sends to ``{server}/api/v1``; ``Authorization: Bearer`` when a token is given."""

    def __init__(self, server: str, token: str | None = None, *, timeout: float = 10.0,
                 client: httpx.Client | None = None) -> None:
        headers = {"User-Agent": "sapo-monitor-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.server = server.rstrip("/")
        self._timeout = timeout
        self._headers = headers
        self._client = client or self._new_client()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.server}/api/v1", timeout=self._timeout, headers=self._headers)

    def after_fork(self) -> None:
        """A forked child opens its own connections (the parent's sockets are not ours to use or close)."""
        self._client = self._new_client()

    def put_run(self, run_id: str, doc: dict[str, Any]) -> None:
        self._send("PUT", f"/runs/{run_id}", json=doc)

    def post_steps(self, run_id: str, body: bytes) -> dict[str, Any] | None:
        headers = {"Content-Type": "application/json"}
        if body[:2] == b"\x1f\x8b":  # gzip magic: the spool stores bodies compressed
            headers["Content-Encoding"] = "gzip"
        response = self._send("POST", f"/runs/{run_id}/steps", content=body, headers=headers)
        try:
            doc = response.json()
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def close(self) -> None:
        self._client.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {self.server}/api/v1{path}: {type(exc).__name__}: {exc}",
                                 retryable=True) from exc
        retry = classify_status(response.status_code)
        if retry is None:
            return response
        detail = response.text[:300].replace("\n", " ")
        raise TransportError(
            f"{method} {self.server}/api/v1{path}: HTTP {response.status_code}: {detail}",
            status=response.status_code,
            retryable=retry,
            retry_after=_retry_after(response),
        )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None
