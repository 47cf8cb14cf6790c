"""PostgreSQL refused, blackholed, then back, through a real TCP proxy (tests/support/tcp_proxy.py):
ingest and /readyz answer 503 with Retry-After within bounded time, /healthz never waits for the
database, and ingest recovers promptly once the database is back. (SQLite is a local file: these
failures are PostgreSQL's.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sapo_monitor.client.wire import StepRecord, encode_batch
from sapo_monitor.service.app import create_app
from sapo_monitor.service.outbox.settings import AlertingSettings
from sapo_monitor.service.settings import Settings
from sapo_monitor.service.storage import migrate

from tests.support.live import serve_in_thread
from tests.support.postgres import pg_database
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres
FAST_DB = {"db_connect_timeout_s": 2.0, "db_statement_timeout_s": 2.0, "db_pool_timeout_s": 1.0, "pool_size": 4}


@pytest.fixture
def proxied() -> Iterator[tuple[TcpProxy, str]]:
    """A running service whose database connections go through a proxy; yields (proxy, base URL)."""
    with pg_database() as url:
        migrate.upgrade(url)
        proxy = TcpProxy(("127.0.0.1", 5432)).start()
        app = create_app(Settings(db=proxy.url_for(url), host="127.0.0.1", port=0, auth="off", **FAST_DB))
        app.state.alerting_settings = AlertingSettings(outbox_poll_s=0.1, silent_check_s=3600.0, outbox_stall_s=3.0)
        try:
            with serve_in_thread(app, timeout=20) as base:
                yield proxy, base
        finally:
            proxy.stop()


def ingest(c: httpx.Client, run: str, step: int) -> httpx.Response:
    body = encode_batch([StepRecord(step, time.time(), {"loss": 1.0})])
    return c.post(f"/api/v1/runs/{run}/steps", content=body,
                  headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def test_refused_database_answers_503_with_retry_after_at_once(proxied) -> None:  # type: ignore[no-untyped-def]
    proxy, base = proxied
    with httpx.Client(base_url=base, timeout=30) as c:
        assert ingest(c, "r", 0).status_code in (200, 202)
        proxy.set_mode("refuse")
        r, took = timed(lambda: ingest(c, "r", 1))
        assert r.status_code == 503 and r.headers.get("Retry-After") == "2" and took < 3.0, (r.text, took)
        ready, took = timed(lambda: c.get("/readyz"))
        assert ready.status_code == 503 and ready.headers.get("Retry-After") and took < 1.5
        proxy.set_mode("forward")
        r, took = timed(lambda: ingest(c, "r", 2))
        assert r.status_code in (200, 202) and took < 3.0, (r.text, took)


def test_blackholed_database_bounded_answers_and_prompt_recovery(proxied) -> None:  # type: ignore[no-untyped-def]
    proxy, base = proxied
    with httpx.Client(base_url=base, timeout=60) as c:
        for step in range(3):
            assert ingest(c, "r", step).status_code in (200, 202)
        # Clients built first: building 20 at once (SSL contexts) would hold the GIL this in-process
        # service shares with the test, and time that instead of the service.
        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(20)]
        proxy.set_mode("blackhole")  # the pooled connections die silently, new ones never answer
        answers: list[tuple[int, float, str | None]] = []

        def one(i: int) -> None:
            with clients[i] as ci:
                r, took = timed(lambda: ingest(ci, f"b{i}", 0))
                answers.append((r.status_code, took, r.headers.get("Retry-After")))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        for _ in range(3):  # liveness never waits for the database or its blocked threads
            health, took = timed(lambda: c.get("/healthz"))
            assert health.status_code == 200 and took < 0.5, took
        ready, took = timed(lambda: c.get("/readyz"))
        assert ready.status_code == 503 and ready.headers.get("Retry-After") and took < 1.5, took
        for t in threads:
            t.join(60)
        assert len(answers) == 20
        assert all(code == 503 and retry == "2" for code, _, retry in answers), answers
        assert max(took for _, took, _ in answers) < 12.0, answers  # bounded, not the whole outage
        proxy.set_mode("forward")
        t0 = time.monotonic()
        while ingest(c, "r", 10).status_code not in (200, 202):  # dead connections are replaced promptly
            assert time.monotonic() - t0 < 8.0, "ingest did not recover"
            time.sleep(0.2)
        while c.get("/readyz").status_code != 200:  # the delivery worker's next outbox read, too
            assert time.monotonic() - t0 < 10.0, "/readyz did not recover"
            time.sleep(0.2)
