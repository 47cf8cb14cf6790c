"""A local webhook receiver: the demo subscribes it to alerts and counts what arrives."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Delivery", "WebhookReceiver"]


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it is not JSON


@dataclass
class _Inbox:
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    inbox: _Inbox

    def log_message(self, format: str, *args: Any) -> None:  # the demo prints its own summary
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        with self.inbox.lock:
            self.inbox.deliveries.append(Delivery(dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (free port) in a daemon thread that accepts every POST."""

    def __init__(self) -> None:
        self._inbox = _Inbox()
        handler = type("Handler", (_Handler,), {"inbox": self._inbox})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def deliveries(self) -> list[Delivery]:
        with self._inbox.lock:
            return list(self._inbox.deliveries)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
