"""A stdlib HTTP server on 127.0.0.1 served from a daemon thread (the plumbing of the tests' receivers)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def start_http_server(handler: type[BaseHTTPRequestHandler], port: int = 0) -> ThreadingHTTPServer:
    """Serve ``handler`` on 127.0.0.1:``port`` (0: chosen by the OS, see ``server_address``) in a thread.

    The address may be reused at once (``HTTPServer.allow_reuse_address``), so a server can be stopped
    and started again on the same port."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop_http_server(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()
