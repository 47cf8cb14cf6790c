"""The delivery worker: claims due outbox rows, sends them signed, records every attempt.

A thread (the service's database layer is synchronous), started and stopped by the service's
lifespan; it also runs the periodic silence check. Several workers (replicas, or uvicorn workers)
may run against one PostgreSQL database: claims use ``SKIP LOCKED`` and leases (see :mod:`.store`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid

import httpx

from .settings import AlertingSettings
from .signing import signature_headers
from .store import Claimed, claim_due, record_attempt, release

__all__ = ["DeliveryWorker", "backoff_s"]

log = logging.getLogger("sapo_monitor.webhooks")


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Delay before the next try after ``attempt`` failures: exponential, capped, 0-10 % jitter."""
    delay = min(base * (2.0 ** max(attempt - 1, 0)), cap)
    return delay * (1.0 + 0.1 * random.random())


class DeliveryWorker:
    """Owns one HTTP client and one background thread."""

    def __init__(self, db, settings: AlertingSettings, *, worker_id: str | None = None) -> None:  # type: ignore[no-untyped-def]
        self.db = db
        self.settings = settings
        self.worker_id = worker_id or f"w-{uuid.uuid4().hex[:12]}"
        self._client = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_silence = 0.0

    # --- one round -----------------------------------------------------------------------------

    def deliver_due(self, limit: int = 20) -> int:
        """Claim and send what is due now; the number of attempts made."""
        s = self.settings
        with self.db.write() as session:
            claimed = claim_due(session, worker_id=self.worker_id, now=time.time(), lease_s=s.webhook_lease_s, limit=limit)
        blocked: set[tuple[int, str]] = set()
        skipped: list[int] = []
        attempts = 0
        for item in claimed:
            key = (item.webhook_id, item.order_key)
            if key in blocked:  # keep per-run order: nothing overtakes a failed delivery
                skipped.append(item.id)
                continue
            attempts += 1
            if not self._attempt(item):
                blocked.add(key)
        if skipped:
            with self.db.write() as session:
                release(session, ids=skipped, worker_id=self.worker_id)
        return attempts

    def _attempt(self, item: Claimed) -> bool:
        s = self.settings
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "sapo-monitor-webhooks/1",
            **signature_headers(item.secret, item.event_id, item.body),
        }
        t0 = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            resp = self._client.post(item.url, content=item.body, headers=headers)
            status = resp.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}: {resp.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration_ms = (time.perf_counter() - t0) * 1000.0
        now = time.time()
        if error is None:
            outcome, next_at = "delivered", None
        elif now - item.created_at >= s.webhook_retry_period_s:
            outcome, next_at = "failed", None
            log.warning("webhook %s: giving up on event %s after %d attempts: %s",
                        item.webhook_id, item.event_id, item.attempts + 1, error)
        else:
            outcome = "retry"
            next_at = now + backoff_s(item.attempts + 1, s.webhook_backoff_base_s, s.webhook_backoff_max_s)
        with self.db.write() as session:
            record_attempt(session, claimed=item, worker_id=self.worker_id, now=now, duration_ms=duration_ms,
                           status_code=status, error=error, outcome=outcome, next_attempt_at=next_at)
        return error is None

    def check_silence(self) -> int:
        from ..rules.silence import check_silent_runs

        with self.db.write() as session:
            return len(check_silent_runs(session, now=time.time()))

    # --- thread --------------------------------------------------------------------------------

    def _loop(self) -> None:
        s = self.settings
        while not self._stop.is_set():
            busy = 0
            try:
                if time.monotonic() >= self._next_silence:
                    self._next_silence = time.monotonic() + s.silent_check_s
                    self.check_silence()
                busy = self.deliver_due()
            except Exception:  # a database hiccup must not kill delivery for the process's lifetime
                log.exception("webhook worker round failed; retrying in %.1fs", s.outbox_poll_s)
            if not busy:
                self._stop.wait(s.outbox_poll_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sapo-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._client.close()
