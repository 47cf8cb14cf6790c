"""Background delivery: a worker thread takes step records from a bounded queue, batches them, writes
each batch to the spool, and sends the spool to the service in order, with retries.

Why write-ahead: a batch in flight is already on disk, so a crash, a kill or a service outage loses
nothing, and memory stays bounded by the queue whatever the service does. The service upserts per
(run, step), so sending a batch twice (ack lost, replay after restart) never doubles a step.

Failures never reach training code. Network errors, timeouts, 408, 429 and 5xx make the worker back
off (exponential, with jitter, honouring Retry-After) while new batches keep going to the spool; any
other 4xx is final for that batch: it moves to ``rejected/`` with the reason and is not retried
automatically (``sapo-monitor upload`` sends it once the cause is fixed). Each kind of failure is
logged once, with the reason, until delivery recovers.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from typing import Any

from sapo_monitor.client import wire
from sapo_monitor.client._spool import Spool
from sapo_monitor.client._transport import Transport
from sapo_monitor.client.errors import SpoolError, TransportError
from sapo_monitor.client.settings import ClientSettings

__all__ = ["Delivery"]

log = logging.getLogger("sapo_monitor.client")

_STOP = object()
_FLUSH = object()
_BACKOFF_BASE = 0.5  # seconds before the first retry
_MEMORY_LIMIT = 1_000  # batches kept in memory when even the spool cannot be written


class Delivery:
    """Owns the worker thread of one run. ``submit`` never blocks and never raises."""

    def __init__(self, *, run_id: str, spec_doc: dict[str, Any], spool: Spool, transport: Transport | None,
                 settings: ClientSettings) -> None:
        self.run_id = run_id
        self.spool = spool
        self._spec_doc = dict(spec_doc)
        self._transport = transport
        self._settings = settings
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_size)
        self._bell = threading.Event()  # cuts the worker's batching wait short (flush, close, full queue)
        self._memory: list[bytes] = []  # bodies the spool could not take (disk full...)
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._healthy = True
        self._attempt = 0
        self._next_try = 0.0
        self._put_done = transport is None
        self._closed = False
        self._last_error: TransportError | None = None
        self._close_deadline: float | None = None
        self._final_status = "finished"
        self.sent_batches = 0
        try:
            spool.write_run(self._spec_doc)
        except SpoolError as exc:
            self._warn_once("spool", f"sapo-monitor: {exc}; delivery continues without a spool")
        self._thread = threading.Thread(target=self._run, name=f"sapo-monitor-{run_id}", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------------------------- caller side
    def submit(self, record: wire.StepRecord) -> None:
        if self._closed:  # no worker any more: keep the step on disk for the next process or an upload
            self._warn_once("closed", f"sapo-monitor: run {self.run_id} was closed; later steps go to "
                                      f"{self.spool.dir} only")
            self._store([record])
            return
        try:
            self._queue.put_nowait(record)
            if self._queue.qsize() >= self._settings.batch_max_steps:
                self._bell.set()
        except queue.Full:
            # The worker cannot keep up: spool from this thread rather than drop or block training.
            self._warn_once("queue", f"sapo-monitor: delivery queue full ({self._settings.queue_size} steps); "
                                     "writing steps to the spool directly")
            self._store([record])

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted step is on the service (online) or in the spool (offline)."""
        deadline = time.monotonic() + timeout
        self._queue.put(_FLUSH)
        self._bell.set()
        while time.monotonic() < deadline:
            if self._drained():
                return True
            time.sleep(0.02)
        return self._drained()

    def close(self, timeout: float | None = None, status: str = "finished") -> None:
        """Deliver what can be delivered within ``timeout`` seconds, send the final status, stop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        timeout = self._settings.close_timeout if timeout is None else timeout
        self._final_status = status
        self._close_deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=max(timeout, 0.1))
        self._bell.set()
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            # The worker is stuck in a request: secure whatever is still queued on disk ourselves.
            leftover = [r for r in self._drain_queue() if isinstance(r, wire.StepRecord)]
            self._store(leftover)
            log.warning("sapo-monitor: delivery of run %s did not finish within %.0fs; unsent steps are in %s",
                        self.run_id, timeout, self.spool.dir)
        if self._transport is not None:
            self._transport.close()

    @property
    def pending_batches(self) -> int:
        return len(self.spool.pending()) + len(self._memory)

    # -------------------------------------------------------------------------------- worker side
    def _drained(self) -> bool:
        if self._queue.unfinished_tasks:  # put() counts up, the worker's task_done() counts down
            return False
        return self._transport is None or self.pending_batches == 0

    def _run(self) -> None:
        try:
            while True:
                records, stop, taken = self._collect()
                if records:
                    self._store(records)
                if self._transport is not None:
                    self._send_pending(closing=stop)
                    if stop:
                        self._retry_until_deadline()
                for _ in range(taken):
                    self._queue.task_done()
                if stop:
                    break
            self._finish()
        except Exception:  # the worker must never die silently; the spool still holds everything
            log.exception("sapo-monitor: delivery worker of run %s failed; unsent steps stay in %s",
                          self.run_id, self.spool.dir)

    def _collect(self) -> tuple[list[wire.StepRecord], bool, int]:
        """Up to one batch of records (by count, by bytes, or what arrived within flush_interval), whether
        to stop, and how many queue items were taken."""
        s = self._settings
        wait = s.flush_interval
        if not self._healthy:
            wait = min(wait, max(0.0, self._next_try - time.monotonic()))
        try:
            first = self._queue.get(timeout=max(wait, 0.001))
        except queue.Empty:
            return [], False, 0
        if first is _STOP:
            return [], True, 1
        if first is _FLUSH:
            return [], False, 1
        records = [first]
        size = _approx_size(first)
        deadline = time.monotonic() + s.flush_interval
        # Gather the rest without waking per record (each wake-up costs the training thread a GIL
        # hand-off): drain what is there, then sleep until the deadline unless flush/close/a filling
        # queue rings the bell.
        while len(records) < s.batch_max_steps and size < s.batch_max_bytes:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._bell.wait(remaining):
                    self._bell.clear()
                    if time.monotonic() >= deadline or self._queue.empty():
                        break
                continue
            if item is _STOP:
                return records, True, len(records) + 1
            if item is _FLUSH:
                return records, False, len(records) + 1
            records.append(item)
            size += _approx_size(item)
        return records, False, len(records)

    def _drain_queue(self) -> list[Any]:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _store(self, records: list[wire.StepRecord]) -> None:
        if not records:
            return
        by_step = {r.step: r for r in records}  # a step recorded twice: the later record wins
        body = wire.encode_batch(by_step.values())
        try:
            self.spool.put(body)
            return
        except SpoolError as exc:
            self._warn_once("spool", f"sapo-monitor: {exc}; keeping steps in memory until they are sent")
        with self._lock:
            if len(self._memory) < _MEMORY_LIMIT:
                self._memory.append(body)
                return
        steps = sorted(by_step)
        log.error("sapo-monitor: LOST steps %d..%d of run %s: neither the service nor the spool (%s) took "
                  "them and the in-memory reserve is full", steps[0], steps[-1], self.run_id, self.spool.dir)

    def _send_pending(self, *, closing: bool) -> None:
        assert self._transport is not None
        if not self._healthy and not closing and time.monotonic() < self._next_try:
            return
        if not self._put_done:
            try:
                self._transport.put_run(self.run_id, self._spec_doc)
                self._put_done = True
            except TransportError as exc:
                if exc.retryable:
                    self._failed(exc)
                    return
                self._put_done = True  # steps still create the run with defaults
                self._refused(exc)
        while self._memory:
            if not self._post(self._memory[0], None):
                return
        for batch_id in self.spool.pending():
            if closing and self._close_deadline is not None and time.monotonic() > self._close_deadline:
                return
            try:
                body = self.spool.read(batch_id)
            except SpoolError:
                continue  # replayed and removed by another process of this run meanwhile
            if not self._post(body, batch_id):
                return

    def _post(self, body: bytes, batch_id: str | None) -> bool:
        """Send one body; False when delivery must pause (retryable failure)."""
        assert self._transport is not None
        try:
            self._transport.post_steps(self.run_id, body)
        except TransportError as exc:
            if exc.retryable:
                self._failed(exc)
                return False
            self._refused(exc)
            try:
                if batch_id is None:
                    self._memory.pop(0)
                    batch_id = self.spool.put(body)
                self.spool.reject(batch_id, str(exc))
            except SpoolError as spool_exc:
                log.error("sapo-monitor: LOST a rejected batch of run %s: %s", self.run_id, spool_exc)
            return True
        if batch_id is None:
            self._memory.pop(0)
        else:
            self.spool.remove(batch_id)
        self.sent_batches += 1
        self._recovered()
        return True

    def _retry_until_deadline(self) -> None:
        """While closing: keep retrying (with the usual backoff) until all is sent or time is up."""
        deadline = self._close_deadline or time.monotonic()
        while (not self._put_done or self.pending_batches) and time.monotonic() < deadline:
            time.sleep(max(0.0, min(self._next_try, deadline) - time.monotonic()))
            if time.monotonic() >= deadline:
                return
            self._send_pending(closing=True)

    def _refused(self, exc: TransportError) -> None:
        """A final 4xx: say so once per status (a bad token refuses everything the same way)."""
        self._warn_once(f"http-{exc.status}", f"sapo-monitor: the service refused run {self.run_id}: {exc}. "
                                              f"Refused steps are kept in {self.spool.dir / 'rejected'}; fix the "
                                              f"cause and send them with `sapo-monitor upload {self.spool.dir} "
                                              "--server URL`. Training continues.")

    def _failed(self, exc: TransportError) -> None:
        self._attempt += 1
        delay = min(self._settings.max_backoff, _BACKOFF_BASE * 2 ** (self._attempt - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: many clients do not retry in lockstep
        if exc.retry_after is not None:
            delay = min(self._settings.max_backoff, max(delay, exc.retry_after))
        self._next_try = time.monotonic() + delay
        self._last_error = exc
        if self._healthy:
            log.warning("sapo-monitor: cannot deliver run %s (%s); steps are kept in %s and retried in the "
                        "background. Training continues.", self.run_id, exc, self.spool.dir)
        self._healthy = False

    def _recovered(self) -> None:
        if not self._healthy:
            log.warning("sapo-monitor: delivery of run %s resumed after %d failed attempt(s)",
                        self.run_id, self._attempt)
        self._healthy = True
        self._attempt = 0

    def _finish(self) -> None:
        doc = {**self._spec_doc, "status": self._final_status}
        if self._transport is not None and self.pending_batches == 0 and not self.spool.rejected():
            try:
                self._transport.put_run(self.run_id, doc)
                self.spool.write_run(doc)
                return
            except TransportError as exc:
                if exc.retryable:
                    log.warning("sapo-monitor: could not mark run %s %s: %s", self.run_id, self._final_status, exc)
                else:
                    self._refused(exc)
        try:
            self.spool.write_run(doc, status_pending=True)
        except SpoolError as exc:
            log.error("sapo-monitor: %s", exc)
        n = self.pending_batches
        if self._transport is None:
            log.info("sapo-monitor: run %s recorded offline in %s; send it with `sapo-monitor upload %s "
                     "--server URL`", self.run_id, self.spool.dir, self.spool.dir)
        elif n:
            log.warning("sapo-monitor: %d batch(es) of run %s not delivered yet (last error: %s); they are kept in "
                        "%s and are sent when a process with this run starts again, or with `sapo-monitor upload "
                        "%s --server URL`", n, self.run_id, self._last_error, self.spool.dir, self.spool.dir)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


def _approx_size(record: wire.StepRecord) -> int:
    return 40 * len(record.metrics) + 8 * sum(len(h) for h in record.histograms.values()) + 40
