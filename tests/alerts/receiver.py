"""A real webhook receiver for the tests: an HTTP server on 127.0.0.1 that checks signatures.

It records every request (``raw``) and accepts each event id once (``events``), as a receiver
following the README's advice dedupes by ``X-Sapo-Event-Id``. ``delay_s`` makes it slow (to kill the
service mid-delivery); it can start later on a port chosen in advance (a receiver that is down).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sapo_monitor.service.outbox.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, verify

from tests.support.live import free_port
from tests.support.loopback import start_http_server, stop_http_server


class Receiver:
    def __init__(self, secret: str | None, port: int | None = None, delay_s: float = 0.0) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.delay_s = delay_s
        self.raw: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # first arrival of each event id, in order
        self.bad_signatures = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = receiver.secret is None or verify(receiver.secret, self.headers.get(SIGNATURE_HEADER), body)
                event_id = self.headers.get(EVENT_ID_HEADER, "")
                with receiver._lock:
                    receiver.raw.append({"event_id": event_id, "signed": ok})
                    if not ok:
                        receiver.bad_signatures += 1
                    elif event_id not in receiver._seen:
                        receiver._seen.add(event_id)
                        receiver.events.append({"event_id": event_id, "body": json.loads(body)})
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                self.send_response(204 if ok else 401)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = start_http_server(Handler, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            stop_http_server(self._server)
            self._server = None

    def wait_for(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.events) >= n:
                return
            time.sleep(0.02)
        raise AssertionError(f"receiver got {len(self.events)} events, expected {n}")
