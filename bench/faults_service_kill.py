"""Service SIGKILL mid-ingest: a real ``sapo-monitor serve`` subprocess on SQLite or PostgreSQL, an
in-process client streaming steps (one every 2 ms, loss = step and 20 custom metrics), the service
SIGKILLed mid-stream and started again on the same port and database; the client keeps ending steps
meanwhile and delivers the rest from its spool, then closes. Counted from the database itself:

* lost: steps the client ended that no ``steps`` row holds (after close, plus the spool it left);
* doubled: steps counted twice by the service (sum of ``step_rollups.steps`` minus stored rows; a
  replayed batch must not count again) plus rows beyond the steps ended;
* corrupted: stored rows whose loss or custom metric is not the value the client sent.

Run by ``bench/faults.py`` (``--scenario service-kill``).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

from sapo_monitor.client import init
from sapo_monitor.client._spool import Spool
from sapo_monitor.client.settings import ClientSettings
from sapo_monitor.service.storage.db import make_engine
from sapo_monitor.service.storage.models import metric_column
from sqlalchemy import text

from tests.support.databases import migrated_database
from tests.support.live import ServiceProcess

__all__ = ["service_kill_case"]


def _stored(db_url: str, run: str) -> tuple[dict[int, tuple[float | None, str | None]], int]:
    engine = make_engine(db_url, pooled=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                f"SELECT s.step, s.{metric_column('loss')}, s.extra FROM steps s JOIN runs r ON r.id = s.run_pk "
                "WHERE r.run_id = :run"), {"run": run}).all()
            counted = conn.execute(text(
                "SELECT COALESCE(SUM(b.steps), 0) FROM step_rollups b JOIN runs r ON r.id = b.run_pk "
                "WHERE r.run_id = :run"), {"run": run}).scalar_one()
    finally:
        engine.dispose()
    return {int(step): (loss, extra) for step, loss, extra in rows}, int(counted)


def _corrupt(step: int, loss: float | None, extra: str | None) -> bool:
    metrics = (json.loads(extra) if extra else {}).get("m", {})
    return loss != float(step) or any(metrics.get(f"custom.m{i}") != float(i) for i in range(20))


def service_kill_case(kind: str, *, before: float = 1.5, down: float = 1.0, after: float = 1.5) -> dict[str, float]:
    """One kill on ``kind`` ("sqlite" or "postgres"); returns ended, lost, doubled, corrupted, spooled, rc."""
    with tempfile.TemporaryDirectory(prefix="sapo-kill-") as tmp, migrated_database(kind, Path(tmp), "kill.db") as db_url:
        svc = ServiceProcess(db_url, log_path=Path(tmp) / "service.log", cli=True).start().wait_ready(60)
        run = f"kill-{kind}"
        mon = init(run, settings=ClientSettings(spool_dir=Path(tmp) / "spool", server=svc.url, timeout=5.0,
                                                max_backoff=0.5, close_timeout=60.0))
        stop = threading.Event()
        ended: list[int] = []

        def stream() -> None:
            step = 0
            while not stop.is_set():
                mon.end_step(step, loss=float(step), metrics={f"custom.m{i}": float(i) for i in range(20)})
                ended.append(step)
                step += 1
                time.sleep(0.002)

        thread = threading.Thread(target=stream, daemon=True)
        thread.start()
        try:
            time.sleep(before)
            svc.kill()
            killed_at = len(ended)
            time.sleep(down)
            svc.start().wait_ready(60)
            time.sleep(after)
            stop.set()
            thread.join(10)
            mon.close()
            spooled = len(list(Spool(Path(tmp) / "spool" / run).pending()))  # batches close left behind
            stored, counted = _stored(db_url, run)
        finally:
            svc.stop()
    missing = set(ended) - set(stored)
    extra_rows = len(set(stored) - set(ended))
    return {"ended": len(ended), "killed_at": killed_at, "lost": len(missing),
            "doubled": max(0, counted - len(stored)) + extra_rows,
            "corrupted": sum(_corrupt(s, loss, ex) for s, (loss, ex) in stored.items()),
            "spooled": spooled}
