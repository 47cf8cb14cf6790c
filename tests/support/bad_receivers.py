"""Webhook receivers that misbehave, as real HTTP servers on 127.0.0.1 (for the delivery tests and
``bench/faults_delivery.py``).

Modes: ``ok`` answers 204; ``hang`` reads the request and never answers; ``drip`` answers one byte of
its status line every ``drip_s`` seconds; ``huge`` answers 500 with a ``huge_bytes`` body (streamed,
never held in memory) that starts with ``SECRET-INTERNAL-BODY``; ``fail`` answers 500 with that
marker. Every request is recorded (``arrivals``: event id and time); ``mode`` may change while it runs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.loopback import start_http_server, stop_http_server

__all__ = ["BODY_MARKER", "BadReceiver"]

BODY_MARKER = b"SECRET-INTERNAL-BODY"


class BadReceiver:
    def __init__(self, mode: str = "ok", *, drip_s: float = 0.5, huge_bytes: int = 300 * 1024 * 1024) -> None:
        self.mode = mode
        self.drip_s = drip_s
        self.huge_bytes = huge_bytes
        self.arrivals: list[tuple[str, float]] = []
        self.huge_sent = 0  # bytes of huge bodies the client actually took
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def counts(self) -> Counter[str]:
        """Requests per event id (answered or not)."""
        with self._lock:
            return Counter(e for e, _ in self.arrivals)

    def start(self) -> BadReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.arrivals.append((self.headers.get("X-Sapo-Event-Id", ""), time.time()))
                mode = receiver.mode
                try:
                    if mode == "hang":
                        receiver._release.wait(600)
                    elif mode == "drip":
                        for byte in b"HTTP/1.1 204 No Content\r\n\r\n":
                            if receiver._release.wait(receiver.drip_s):
                                return
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                    elif mode == "huge":
                        self.send_response(500)
                        self.send_header("Content-Length", str(receiver.huge_bytes))
                        self.end_headers()
                        chunk = BODY_MARKER + b"x" * (64 * 1024 - len(BODY_MARKER))
                        sent = 0
                        while sent < receiver.huge_bytes:
                            self.wfile.write(chunk)
                            sent += len(chunk)
                            with receiver._lock:
                                receiver.huge_sent += len(chunk)
                    elif mode == "fail":
                        self.send_response(500)
                        self.send_header("Content-Length", str(len(BODY_MARKER)))
                        self.end_headers()
                        self.wfile.write(BODY_MARKER)
                    else:
                        self.send_response(204)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                except OSError:
                    pass  # the sender gave up on us: that is the point

            def log_message(self, *args: Any) -> None:
                pass

        self._server = start_http_server(Handler)
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            stop_http_server(self._server)
            self._server = None
