"""One real service (SQLite, auth off) for the UI tests, with real runs: the bundled trainer streamed
through the client, a collapsing run with an ``<img onerror>`` name, and a 5,000-step run with a
one-step spike; and a browser context on Debian's chromium."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sapo_monitor.service.app import create_app
from sapo_monitor.service.settings import Settings

from tests.alerts.server import FAST
from tests.support.live import serve_in_thread
from tests.ui.browser import chromium, screenshot_dir
from tests.ui.data import XSS_NAME, post_trace, train_run

SPIKE_STEP = 3_217
SPIKE_VALUE = 1_000.0
LONG_STEPS = 5_000


@dataclass
class UiService:
    base: str
    http: httpx.Client
    shots: Path

    def api(self, path: str, **params: Any) -> Any:
        r = self.http.get("/api/v1" + path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


def _post_long_run(http: httpx.Client) -> None:
    assert http.put("/api/v1/runs/long-spike", json={"project": "ui", "name": "long with a spike",
                                                      "algorithm": "sapo"}).status_code in (200, 201)
    for lo in range(0, LONG_STEPS, 1000):
        steps = [{"step": s, "time": 1_764_000_000.0 + s,
                  "metrics": {"grad_norm": SPIKE_VALUE if s == SPIKE_STEP else 1.0 + (s % 7) * 0.01,
                              "reward.mean": 0.3 + s * 1e-5}}
                 for s in range(lo, lo + 1000)]
        r = http.post("/api/v1/runs/long-spike/steps", json={"schema": 1, "steps": steps})
        assert r.status_code in (200, 202), r.text


@pytest.fixture(scope="session")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiService]:
    tmp = tmp_path_factory.mktemp("ui")
    app = create_app(Settings(db=f"sqlite:///{tmp}/ui.db", host="127.0.0.1", port=0, auth="off"))
    app.state.alerting_settings = FAST
    with serve_in_thread(app, timeout=30) as base, httpx.Client(base_url=base, timeout=30) as http:
        train_run(base, tmp / "spool", run="sapo-40")
        post_trace(http, "collapse", name=XSS_NAME, tags={"suite": "ui", "note": "<b>bold?</b>"})
        post_trace(http, "healthy-start", name="healthy start", steps=range(1, 40))
        _post_long_run(http)
        yield UiService(base, http, screenshot_dir(tmp / "shots"))


# One browser per test module, not per session: Playwright's sync API keeps an event loop running in the
# thread while it is open, and under pytest-xdist a worker goes on to other files (asyncio.run fails there).
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as ctx:
        yield ctx


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    p = browser.new_page()
    yield p
    p.close()
