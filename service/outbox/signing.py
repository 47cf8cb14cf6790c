"""HMAC-SHA256 signatures of webhook requests, and their verification (for receivers and tests).

Each request carries::

    X-Sapo-Event-Id:  <event id>          the same on every retry: receivers dedupe by it
    X-Sapo-Timestamp: <unix seconds>      when this attempt was signed
    X-Sapo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

Signing the timestamp with the body lets a receiver reject replays older than a tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "signature_headers", "verify"]

SIGNATURE_HEADER = "X-Sapo-Signature"
TIMESTAMP_HEADER = "X-Sapo-Timestamp"
EVENT_ID_HEADER = "X-Sapo-Event-Id"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``b"<timestamp>." + body`` under ``secret``."""
    msg = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def signature_headers(secret: str | None, event_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers of one delivery attempt (no signature header when the webhook has no secret)."""
    ts = int(time.time() if now is None else now)
    headers = {EVENT_ID_HEADER: event_id, TIMESTAMP_HEADER: str(ts)}
    if secret:
        headers[SIGNATURE_HEADER] = f"t={ts},v1={sign(secret, ts, body)}"
    return headers


def verify(secret: str, header: str | None, body: bytes, *, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """True when ``header`` (an ``X-Sapo-Signature`` value) signs ``body`` recently enough."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), parts.get("v1", ""))
