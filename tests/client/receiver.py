"""A small real HTTP receiver on 127.0.0.1 speaking the ingest API (stdlib http.server), for the tests
that need to break the receiving side on purpose: stop it, restart it on the same port, make it answer
503 or 401. It stores what the real service stores for these tests: one record per (run, step) (upsert)
and each run's metadata; it also counts every POST so tests can see replays happen.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.loopback import start_http_server, stop_http_server


class Receiver:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.runs: dict[str, dict[str, Any]] = {}
        self.steps: dict[str, dict[int, dict[str, Any]]] = {}
        self.posts = 0
        self.fail_status: int | None = None  # answer every request with this status while set
        self.fail_count = 0  # ... or only the next N requests
        self.lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        self._server = start_http_server(_make_handler(self), self.port)
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            stop_http_server(self._server)
            self._server = None

    def step_numbers(self, run_id: str) -> list[int]:
        with self.lock:
            return sorted(self.steps.get(run_id, {}))


def _make_handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _refused(self) -> bool:
            with rx.lock:
                status = rx.fail_status
                if status is None and rx.fail_count > 0:
                    rx.fail_count -= 1
                    status = 503
            if status is not None:
                self._reply(status, {"detail": "injected failure"})
                return True
            if rx.token and self.headers.get("Authorization") != f"Bearer {rx.token}":
                self._reply(401, {"detail": "missing or unknown token"})
                return True
            return False

        def _body(self) -> Any:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            return json.loads(raw)

        def _parts(self) -> list[str]:
            return self.path.split("?")[0].strip("/").split("/")

        def do_PUT(self) -> None:
            parts = self._parts()
            doc = self._body()
            if self._refused():
                return
            if parts[:3] != ["api", "v1", "runs"] or len(parts) != 4:
                return self._reply(404, {"detail": "not found"})
            with rx.lock:
                rx.runs[parts[3]] = doc
            self._reply(200, {"run_id": parts[3]})

        def do_POST(self) -> None:
            parts = self._parts()
            doc = self._body()
            if self._refused():
                return
            if parts[:3] != ["api", "v1", "runs"] or len(parts) != 5 or parts[4] != "steps":
                return self._reply(404, {"detail": "not found"})
            if doc.get("schema") != 1:
                return self._reply(422, {"detail": "schema: unsupported version"})
            with rx.lock:
                rx.posts += 1
                store = rx.steps.setdefault(parts[3], {})
                for step in doc["steps"]:
                    store[int(step["step"])] = step  # upsert per (run, step)
            self._reply(200, {"accepted": len(doc["steps"])})

        def do_GET(self) -> None:
            parts = self._parts()
            if len(parts) == 5 and parts[:3] == ["api", "v1", "runs"] and parts[4] == "series":
                metric = self.path.split("metric=")[1].split("&")[0]
                with rx.lock:
                    rows = sorted(rx.steps.get(parts[3], {}).items())
                series = {"step": [s for s, _ in rows], "value": [doc["metrics"].get(metric) for _, doc in rows]}
                return self._reply(200, {"run_id": parts[3], "series": {metric: series}})
            if len(parts) == 4 and parts[:3] == ["api", "v1", "runs"] and parts[3] in rx.runs:
                return self._reply(200, {**rx.runs[parts[3]], "steps": rx.step_numbers(parts[3])})
            self._reply(404, {"detail": "not found"})

    return Handler
