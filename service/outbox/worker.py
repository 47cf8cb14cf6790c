"""The delivery worker: claims due outbox rows, sends them signed, records every attempt.

One background thread runs an asyncio loop (started and stopped by the service's lifespan; it also
runs the periodic silence check and, every round, turns due incidents into outbox rows:
:mod:`.incident_notices`). Each receiver (webhook) gets its own sender task, so a receiver
that hangs or drips bytes delays only itself: at most ``webhook_concurrency`` receivers are served at
once, each in order, one attempt at a time, every attempt bounded by ``webhook_timeout_s``.

Database calls run on three threads of the worker's own under a deadline; any failure ends the round, the next one starts on
fresh connections after the poll interval, and the loop itself is restarted if it ever dies. The
worker keeps a heartbeat (:attr:`DeliveryWorker.last_success`, the last outbox read that worked):
``/readyz`` and ``sapo_outbox_delivering`` report a worker that has not read the outbox for
``outbox_stall_s`` as not delivering.

Several workers (replicas, or uvicorn workers) may run against one PostgreSQL database: claims use
``SKIP LOCKED`` and leases, and each lease is renewed right before its row is sent (see :mod:`.store`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..settings import AlertingSettings
from .destinations import DestinationPolicy
from .incident_notices import flush_incident_notifications
from .sender import AttemptResult, new_client, send_once
from .store import Claimed, claim_due, record_attempt, release, renew_lease

if TYPE_CHECKING:
    from ..storage.db import Database

__all__ = ["DeliveryWorker", "backoff_s"]

log = logging.getLogger("sapo_monitor.webhooks")
T = TypeVar("T")


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Delay before the next try after ``attempt`` failures: exponential, capped, 0-10 % jitter."""
    delay = min(base * (2.0 ** max(attempt - 1, 0)), cap)
    return delay * (1.0 + 0.1 * random.random())


class DeliveryWorker:
    """Owns the background thread and its HTTP client; :meth:`deliver_due` runs one round in the caller."""

    def __init__(self, db: Database, settings: AlertingSettings, *, worker_id: str | None = None,
                 db_timeout_s: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        # The time stored rows are compared with (leases, backoff, incident timers); tests pass a fake
        # one to step through group_wait and repeat_interval. The heartbeat is always the real time.
        self.clock = clock
        self.settings = settings
        self.worker_id = worker_id or f"w-{uuid.uuid4().hex[:12]}"
        self.policy = DestinationPolicy(settings.webhook_allow_hosts)
        self.notify_policy = settings.notify_policy()
        self.db_timeout_s = db_timeout_s
        self.last_success = 0.0  # time.time() of the last outbox read that worked (the heartbeat)
        self.restarts = 0
        self._stop = threading.Event()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._next_silence = 0.0
        # A few threads of its own: delivery holds at most this many pooled connections, never ingest's share.
        self._db_threads = ThreadPoolExecutor(max_workers=3, thread_name_prefix="sapo-webhooks-db")

    # --- health --------------------------------------------------------------------------------

    @property
    def delivering(self) -> bool:
        """True while the worker runs and has read the outbox within ``outbox_stall_s``."""
        alive = self._thread is not None and self._thread.is_alive() and not self._stop.is_set()
        return alive and time.time() - self.last_success <= self.settings.outbox_stall_s

    # --- one receiver --------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """A database call in a thread, abandoned after ``db_timeout_s`` (the engine's own timeouts end
        the thread's call soon after)."""
        call = asyncio.get_running_loop().run_in_executor(self._db_threads, functools.partial(fn, *args))
        return await asyncio.wait_for(call, self.db_timeout_s)

    async def _serve_receiver(self, client: httpx.AsyncClient, items: list[Claimed]) -> int:
        """Send one receiver's claimed rows in order; stop at its first failure (the rest is released
        and comes back after its own backoff). The number of attempts made."""
        s = self.settings
        attempts = 0
        for pos, item in enumerate(items):
            if not await self._db(self._renew, item):
                continue  # another worker owns it now, or it is done
            result = await send_once(client, self.policy, item, timeout_s=s.webhook_timeout_s,
                                     max_bytes=s.webhook_max_response_bytes)
            attempts += 1
            await self._db(self._record, item, result)
            if result.error is not None:
                rest = [i.id for i in items[pos + 1:]]
                if rest:
                    await self._db(self._release, rest)
                break
        return attempts

    def _renew(self, item: Claimed) -> bool:
        with self.db.write() as session:
            return renew_lease(session, outbox_id=item.id, worker_id=self.worker_id, now=self.clock(),
                               lease_s=self.settings.webhook_lease_s)

    def _record(self, item: Claimed, result: AttemptResult) -> None:
        s = self.settings
        now = self.clock()
        next_at: float | None = None
        if result.error is None:
            outcome = "delivered"
        elif now - item.created_at >= s.webhook_retry_period_s:
            outcome = "failed"
            log.warning("webhook %s: giving up on event %s after %d attempts: %s",
                        item.webhook_id, item.event_id, item.attempts + 1, result.error)
        else:
            outcome = "retry"
            next_at = now + backoff_s(item.attempts + 1, s.webhook_backoff_base_s, s.webhook_backoff_max_s)
        with self.db.write() as session:
            record_attempt(session, claimed=item, worker_id=self.worker_id, now=now,
                           duration_ms=result.duration_ms, status_code=result.status_code,
                           error=result.error, outcome=outcome, next_attempt_at=next_at)

    def _release(self, ids: list[int]) -> None:
        with self.db.write() as session:
            release(session, ids=ids, worker_id=self.worker_id)

    def _flush_incidents(self) -> int:
        """Write the incident notifications that are due now into the outbox (one transaction)."""
        with self.db.write() as session:
            return flush_incident_notifications(session, now=self.clock(), policy=self.notify_policy)

    def _claim(self, limit: int, busy: set[int]) -> dict[int, list[Claimed]]:
        with self.db.write() as session:
            claimed = claim_due(session, worker_id=self.worker_id, now=self.clock(),
                                lease_s=self.settings.webhook_lease_s, limit=limit, exclude_webhooks=busy)
        self.last_success = time.time()
        groups: dict[int, list[Claimed]] = {}
        for item in claimed:
            groups.setdefault(item.webhook_id, []).append(item)
        return groups

    # --- one round, in the caller (tests, scripts) ---------------------------------------------

    def deliver_due(self, limit: int = 20) -> int:
        """Flush due incident notifications, claim what is due now and send it (receivers concurrently);
        the number of attempts made."""
        return asyncio.run(self._round(limit))

    async def _round(self, limit: int) -> int:
        await self._db(self._flush_incidents)
        groups = await self._db(self._claim, limit, set())
        if not groups:
            return 0
        async with new_client() as client:
            done = await asyncio.gather(*(self._serve_receiver(client, items) for items in groups.values()))
        return sum(done)

    def check_silence(self) -> int:
        from ..silence_check import check_silent_runs

        with self.db.write() as session:
            return len(check_silent_runs(session, now=self.clock()))

    # --- the background loop -------------------------------------------------------------------

    async def _run(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        senders: dict[int, asyncio.Task[int]] = {}
        async with new_client() as client:
            try:
                while not self._stop.is_set():
                    for webhook_id, task in list(senders.items()):
                        if task.done():
                            del senders[webhook_id]
                            if not task.cancelled() and task.exception() is not None:
                                log.warning("webhook %s: sender failed (%s); its leases expire and it is retried",
                                            webhook_id, type(task.exception()).__name__)
                    claimed_any = False
                    try:
                        if time.monotonic() >= self._next_silence:
                            self._next_silence = time.monotonic() + s.silent_check_s
                            await self._db(self.check_silence)
                        await self._db(self._flush_incidents)
                        free = s.webhook_concurrency - len(senders)
                        if free > 0:
                            groups = await self._db(self._claim, max(20, free), set(senders))
                            for webhook_id, items in list(groups.items())[:free]:
                                senders[webhook_id] = asyncio.create_task(self._serve_receiver(client, items))
                                claimed_any = True
                            extra = [i.id for items in list(groups.values())[free:] for i in items]
                            if extra:
                                await self._db(self._release, extra)
                    except Exception as exc:  # any database fault: next round on fresh connections
                        log.warning("webhook worker round failed (%s: %s); retrying in %.1fs",
                                    type(exc).__name__, str(exc)[:200], s.outbox_poll_s)
                    if not claimed_any:
                        self._wake.clear()
                        waiters = [asyncio.ensure_future(self._wake.wait()), *senders.values()]
                        await asyncio.wait(waiters, timeout=s.outbox_poll_s,
                                                     return_when=asyncio.FIRST_COMPLETED)
                        waiters[0].cancel()
            finally:
                for task in senders.values():
                    task.cancel()
                await asyncio.gather(*senders.values(), return_exceptions=True)

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                asyncio.run(self._run())
            except Exception:  # the loop must outlive anything: restart it
                self.restarts += 1
                log.exception("webhook worker loop died; restarting")
                self._stop.wait(self.settings.outbox_poll_s)

    def start(self) -> None:
        self._stop.clear()
        self.last_success = time.time()  # a grace of outbox_stall_s for the first round
        self._thread = threading.Thread(target=self._main, name="sapo-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._db_threads.shutdown(wait=False, cancel_futures=True)
