"""One delivery attempt over HTTP, bounded in time and bytes, to a vetted address.

The whole attempt (name resolution, connect, request, status line, answer) runs under one deadline
(``asyncio.timeout``), so a receiver that drips one byte a second is cut off like one that hangs; at
most ``max_bytes`` of the answer are read and nothing of it is kept: the outcome is the status line.
The name is resolved and vetted (:mod:`.destinations`) at every attempt and the connection goes to
the vetted address, so DNS rebinding cannot steer a delivery inside.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from .destinations import DestinationPolicy, RefusedDestination
from .signing import signature_headers
from .store import Claimed

__all__ = ["AttemptResult", "new_client", "send_once"]

USER_AGENT = "sapo-monitor-webhooks/1"


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt did: ``error`` is None on a 2xx, else a one-line reason (never the answer body)."""

    status_code: int | None
    error: str | None
    duration_ms: float


def new_client() -> httpx.AsyncClient:
    """The HTTP client of the delivery worker: no redirects (a 3xx could point inside), no proxies from
    the environment (the vetted address must be the one connected to)."""
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=None,
                             limits=httpx.Limits(max_connections=256, max_keepalive_connections=32))


def _host_header(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.port is None else f"{host}:{url.port}"


async def _post(client: httpx.AsyncClient, policy: DestinationPolicy, item: Claimed, max_bytes: int) -> int:
    loop = asyncio.get_running_loop()
    destinations = await loop.run_in_executor(None, policy.vet, item.url)
    url = httpx.URL(item.url)
    headers = {
        "Host": _host_header(url),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signature_headers(item.secret, item.event_id, item.body),
    }
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    request = client.build_request("POST", url.copy_with(host=destinations[0].address), content=item.body,
                                   headers=headers, extensions=extensions)
    response = await client.send(request, stream=True)
    try:
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= max_bytes:
                break  # closing unread drops the connection: a huge answer costs at most max_bytes
    finally:
        await response.aclose()
    return response.status_code


async def send_once(client: httpx.AsyncClient, policy: DestinationPolicy, item: Claimed, *, timeout_s: float,
                    max_bytes: int) -> AttemptResult:
    """POST ``item`` once; never raises for anything the receiver or the network does."""
    t0 = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        # wait_for, not asyncio.timeout (3.11+): the project supports 3.10.
        status = await asyncio.wait_for(_post(client, policy, item, max_bytes), timeout_s)
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except (TimeoutError, asyncio.TimeoutError):  # distinct classes before 3.11
        error = f"no complete answer within {timeout_s:g} s"
    except RefusedDestination as exc:
        error = f"refused destination: {exc}"[:300]
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    return AttemptResult(status, error, (time.perf_counter() - t0) * 1000.0)
