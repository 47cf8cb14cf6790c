"""Two service processes on one PostgreSQL database, ingesting into one run at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.live import ServiceProcess
from tests.support.postgres import drop_pg_database, new_pg_database

from .util import batch, post_steps


@contextmanager
def _serve(db_url: str, log_path: Path) -> Iterator[str]:
    """``sapo-monitor serve`` (the CLI, which checks the schema before uvicorn starts) on ``db_url``."""
    service = ServiceProcess(db_url, env={"SAPO_MONITOR_ACTIVE_WINDOW": "3600"}, log_path=log_path, cli=True)
    try:
        service.start().wait_ready(60)
        yield service.url
    finally:
        service.stop(20)


def _metric_samples(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("run") == "shared":
                out[(s.name, s.labels.get("le", ""))] = s.value
    return out


@pytest.mark.postgres
def test_two_processes_lose_and_double_nothing(tmp_path: Path) -> None:
    name, url = new_pg_database()
    try:
        # both start on the empty database: one migrates
        with _serve(url, tmp_path / "a.log") as a, _serve(url, tmp_path / "b.log") as b:
            errors: list[str] = []

            def writer(base: str, offset: int) -> None:
                with httpx.Client(base_url=base, timeout=60) as c:
                    # Interleaved 20-step chunks, and each writer replays some of the other's steps.
                    for start in range(offset, 1200, 40):
                        for chunk in (range(start, start + 20), range((start + 20) % 1200, (start + 20) % 1200 + 20)):
                            r = post_steps(c, "shared", batch(chunk))
                            if r.status_code != 200:
                                errors.append(r.text)

            threads = [threading.Thread(target=writer, args=(base, off)) for base, off in ((a, 0), (b, 20))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors
            for base in (a, b):
                doc = httpx.get(base + "/api/v1/runs/shared/series",
                                params={"metric": "custom.x", "max_points": 100_000}).json()
                assert doc["series"]["custom.x"]["step"] == list(range(1200))
                assert doc["series"]["custom.x"]["value"] == [float(s) for s in range(1200)]
            ma = _metric_samples(httpx.get(a + "/metrics").text)
            mb = _metric_samples(httpx.get(b + "/metrics").text)
            assert ma == mb
            assert ma[("sapo_run_last_step", "")] == 1199 and ma[("sapo_loss", "")] == 1 / 1200
    finally:
        drop_pg_database(name)
