"""Webhook delivery after a PostgreSQL stall that leaves dead connections (a real TCP proxy between the
service and PostgreSQL): the worker recovers by itself, and /readyz and ``sapo_outbox_delivering`` say
when it is not delivering."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from sapo_monitor.service.app import create_app
from sapo_monitor.service.settings import Settings
from sapo_monitor.service.storage import migrate

from tests.alerts.receiver import Receiver
from tests.alerts.server import FAST
from tests.alerts.test_api import post_trace
from tests.alerts.traces import collapse_trace
from tests.support.live import serve_in_thread
from tests.support.postgres import pg_database
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres
SECRET = "outage-secret"


@pytest.fixture
def proxied() -> Iterator[tuple[TcpProxy, str, FastAPI]]:
    with pg_database() as url:
        migrate.upgrade(url)
        proxy = TcpProxy(("127.0.0.1", 5432)).start()
        settings = Settings(db=proxy.url_for(url), host="127.0.0.1", port=0, auth="off", pool_size=4,
                            db_connect_timeout_s=2.0, db_statement_timeout_s=2.0, db_pool_timeout_s=1.0)
        app = create_app(settings)
        app.state.alerting_settings = FAST.model_copy(update={"outbox_stall_s": 2.0})
        try:
            with serve_in_thread(app, timeout=20) as base:
                yield proxy, base, app
        finally:
            proxy.stop()


def _gauge(c: httpx.Client, name: str) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


def _wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _told_critical(receiver: Receiver, run: str) -> bool:
    """The run's incident has been notified as critical (opened so, or escalated): nothing left to tell."""
    return any(e["body"]["incident"]["run_id"] == run and e["body"]["incident"]["severity"] == "critical"
               for e in receiver.events)


def test_delivery_recovers_after_a_stall_with_dead_connections(proxied) -> None:  # type: ignore[no-untyped-def]
    proxy, base, _app = proxied
    receiver = Receiver(SECRET).start()
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.post("/api/v1/webhooks", json={"url": receiver.url, "secret": SECRET}).status_code == 201
            post_trace(c, "before", collapse_trace())
            _wait(lambda: _told_critical(receiver, "before"), 20, "the incident's notification")
            assert _gauge(c, "sapo_outbox_delivering") == 1.0
            proxy.set_mode("blackhole")  # every open connection dies silently; new ones never answer
            time.sleep(1.0)

            def says_stalled() -> bool:
                return c.get("/readyz").status_code == 503
            _wait(says_stalled, 5, "/readyz to report the stall")
            proxy.set_mode("forward")  # the connections that saw the stall stay dead (their bytes are lost)
            _wait(lambda: c.get("/readyz").status_code == 200, 15, "/readyz to recover")
            assert _gauge(c, "sapo_outbox_delivering") == 1.0
            assert time.time() - _gauge(c, "sapo_outbox_worker_last_success_timestamp_seconds") < 5
            post_trace(c, "after", collapse_trace())
            _wait(lambda: _told_critical(receiver, "after"), 20, "delivery to resume by itself")
    finally:
        receiver.stop()
    ids = [r["event_id"] for r in receiver.raw]
    assert len(ids) == len(set(ids))


def test_readyz_and_metrics_say_when_the_worker_is_not_delivering(proxied) -> None:  # type: ignore[no-untyped-def]
    """The database answers but the worker has stopped reading the outbox (here: its thread ended):
    /readyz answers 503 naming webhooks and the gauge reads 0."""
    _proxy, base, app = proxied
    with httpx.Client(base_url=base, timeout=30) as c:
        assert _gauge(c, "sapo_outbox_delivering") == 1.0 and c.get("/readyz").status_code == 200
        app.state.delivery_worker.stop()
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"][0]["loc"] == ["webhooks"]
        assert ready.headers.get("Retry-After")
        assert _gauge(c, "sapo_outbox_delivering") == 0.0
