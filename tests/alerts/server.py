"""The real service for the API tests: uvicorn in a thread on 127.0.0.1 (port chosen by the OS)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from sapo_monitor.service.app import create_app
from sapo_monitor.service.outbox.settings import AlertingSettings
from sapo_monitor.service.settings import Settings

FAST = AlertingSettings(
    webhook_backoff_base_s=0.05, webhook_backoff_max_s=0.2, outbox_poll_s=0.02, webhook_timeout_s=2.0,
    webhook_lease_s=3.0, silent_check_s=0.2,
)


@contextmanager
def live_service(db_url: str, *, auth: str = "off", alerting: AlertingSettings = FAST) -> Iterator[str]:
    """Yields the base URL of a running service on ``db_url``."""
    app = create_app(Settings(db=db_url, host="127.0.0.1", port=0, auth=auth))
    app.state.alerting_settings = alerting
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "service did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
