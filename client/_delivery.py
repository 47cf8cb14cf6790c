"""Background delivery: two threads per run. The spool writer puts every submitted step on disk within
``SPOOL_INTERVAL`` seconds; the sender POSTs what is on disk to the service, in order, with retries.

Why two: the writer never touches the network, so a POST that blocks (a slow, hung or unreachable
service) never holds steps in memory. A step handed to ``submit`` is in the run's open segment
(``_spool.Segment``, one append per round) within ``SPOOL_INTERVAL`` (0.1 s) whatever the network does;
a SIGKILL loses at most that window. Segments are sealed into request bodies by count, bytes or
``flush_interval`` (the batching of the POSTs); the service upserts per (run, step), so sending a batch
twice (ack lost, replay after restart) never doubles a step.

Failures never reach training code. Network errors, timeouts, 408, 429 and 5xx make the sender back off
(``_backoff.Backoff``: exponential, full jitter, Retry-After, cap) while the writer keeps spooling; any
other 4xx is final for that batch: it moves to ``rejected/`` with the reason and is not retried
automatically (``sapo-monitor upload`` sends it once the cause is fixed). Each kind of failure is logged
once, with the reason, until delivery recovers.

The ingest response is parsed in one place, ``_post``, and handed to ``on_response`` (a callable set by
the monitor; it runs on the sender thread and must not block).

After ``os.fork`` (a data-loader worker) the child has neither thread: an at-fork hook gives it fresh
locks and an empty queue, and its first ``submit`` starts its own threads with its own connection; a
child never sends the run's final status (its parent owns the run).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from sapo_monitor.client import wire
from sapo_monitor.client._backoff import Backoff
from sapo_monitor.client._spool import Segment, Spool, batch_body, record_line
from sapo_monitor.client._transport import Transport
from sapo_monitor.client._warn_once import WarnOnce
from sapo_monitor.client.errors import SpoolError, TransportError
from sapo_monitor.client.settings import ClientSettings

__all__ = ["SPOOL_INTERVAL", "Delivery"]

log = logging.getLogger("sapo_monitor.client")

SPOOL_INTERVAL = 0.1  # seconds: the write-ahead bound, from submit() to the open segment on disk
_MEMORY_LIMIT = 1_000  # batches kept in memory when even the spool cannot be written
_LIVE: weakref.WeakSet[Delivery] = weakref.WeakSet()


class Delivery:
    """Owns the spool writer and sender threads of one run. ``submit`` never blocks and never raises."""

    def __init__(self, *, run_id: str, spec_doc: dict[str, Any], spool: Spool, transport: Transport | None,
                 settings: ClientSettings, on_response: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.run_id = run_id
        self.spool = spool
        self.on_response = on_response
        self.sent_batches = 0
        self._spec_doc = dict(spec_doc)
        self._transport = transport
        self._settings = settings
        self._warn_once = WarnOnce(log)
        self._put_done = transport is None
        self._forked = False
        self._final_status = "finished"
        self._close_deadline: float | None = None
        self._last_error: TransportError | None = None
        self._fresh_state()
        try:
            spool.write_run(self._spec_doc)
            spool.recover_open()  # steps a killed process of this run had not sealed yet
        except SpoolError as exc:
            self._warn_once("spool", f"sapo-monitor: {exc}; delivery continues without a spool")
        _LIVE.add(self)
        self._start()

    def _fresh_state(self) -> None:
        """Everything a process must not share with its parent after a fork."""
        self._pid = os.getpid()
        self._pending: collections.deque[wire.StepRecord] = collections.deque()
        self._writing = False
        self._lock = threading.Lock()
        self._wake_writer = threading.Event()
        self._wake_sender = threading.Event()
        self._writer_done = threading.Event()
        self._stop = False
        self._closed = False
        self._flush_asked = 0  # flush() requests; the writer seals the open segment for each
        self._flush_done = 0
        self._memory: list[bytes] = []  # bodies the spool could not take (disk full...)
        self._segment: Segment | None = None
        self._seg_lines: dict[int, bytes] = {}  # step -> line: a step recorded twice, the later wins
        self._seg_bytes = 0
        self._seg_started = 0.0
        self._seg_on_disk = True
        self._backoff = Backoff(cap=self._settings.max_backoff)
        self._healthy = True
        self._next_try = 0.0
        self._writer: threading.Thread | None = None
        self._sender: threading.Thread | None = None

    def _start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name=f"sapo-monitor-spool-{self.run_id}",
                                        daemon=True)
        self._writer.start()
        if self._transport is not None:
            self._sender = threading.Thread(target=self._send_loop, name=f"sapo-monitor-send-{self.run_id}",
                                            daemon=True)
            self._sender.start()

    def _after_fork_in_child(self) -> None:
        self._forked = True
        self._fresh_state()  # new locks: a lock held by a parent thread at fork time stays held here
        self.spool.after_fork()
        self._pid = -1  # threads start at the child's first submit
        self._put_done = True  # the parent PUT the run; the child only adds steps
        reset = getattr(self._transport, "after_fork", None)
        if callable(reset):
            reset()

    # -------------------------------------------------------------------------------- caller side
    def submit(self, record: wire.StepRecord) -> None:
        if self._pid != os.getpid():
            self._start_in_child()
        if self._closed:  # no writer any more: keep the step on disk for the next process or an upload
            self._warn_once("closed", f"sapo-monitor: run {self.run_id} was closed; later steps go to "
                                      f"{self.spool.dir} only")
            self._store([record])
            return
        if len(self._pending) >= self._settings.queue_size:
            # Only a stalled disk gets here: spool from this thread rather than drop or hold more in memory.
            self._warn_once("queue", f"sapo-monitor: delivery queue full ({self._settings.queue_size} steps); "
                                     "writing steps to the spool directly")
            self._store([record])
            return
        self._pending.append(record)  # deque.append is atomic: no lock on the training thread

    def _start_in_child(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted step is on the service (online) or in a sealed batch (offline)."""
        deadline = time.monotonic() + timeout
        if self._writer is None or self._pid != os.getpid():
            return not self._pending
        with self._lock:
            self._flush_asked += 1
            target = self._flush_asked
        self._wake_writer.set()
        while time.monotonic() < deadline:
            if self._flush_done >= target and self._delivered():
                return True
            self._wake_sender.set()
            time.sleep(0.02)
        return self._flush_done >= target and self._delivered()

    def spool_now(self, timeout: float = 2.0) -> bool:
        """Wait until every submitted step is on disk (the open segment counts); for signal handlers:
        takes no lock the interrupted thread may hold."""
        deadline = time.monotonic() + timeout
        if self._writer is None or not self._writer.is_alive():
            return not self._pending
        self._wake_writer.set()
        while time.monotonic() < deadline:
            if not self._pending and not self._writing:
                return True
            time.sleep(0.005)
        return False

    def close(self, timeout: float | None = None, status: str = "finished") -> None:
        """Deliver what can be delivered within ``timeout`` seconds, send the final status, stop."""
        if self._pid != os.getpid():  # a forked child that never submitted: nothing of its own
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
        timeout = self._settings.close_timeout if timeout is None else timeout
        self._final_status = status
        self._close_deadline = time.monotonic() + timeout
        self._stop = True
        self._wake_writer.set()
        self._wake_sender.set()
        for thread in (self._writer, self._sender):
            if thread is not None:
                thread.join(max(0.0, self._close_deadline - time.monotonic()) + 1.0)
        stuck = [t for t in (self._writer, self._sender) if t is not None and t.is_alive()]
        if self._writer is not None and self._writer.is_alive():  # disk stalled: secure what we can
            self._store(self._take_pending())
        if stuck:
            log.warning("sapo-monitor: delivery of run %s did not finish within %.0fs; unsent steps are in %s",
                        self.run_id, timeout, self.spool.dir)
        if self._transport is not None:
            self._transport.close()

    @property
    def pending_batches(self) -> int:
        return len(self.spool.pending()) + len(self._memory)

    # -------------------------------------------------------------------------------- spool writer
    def _write_loop(self) -> None:
        try:
            while True:
                stop = self._stop  # read before draining: what was submitted before close is taken
                self._wake_writer.wait(SPOOL_INTERVAL)
                self._wake_writer.clear()
                self._spool_round(final=stop)
                if stop:
                    break
        except Exception:  # the writer must never die silently
            log.exception("sapo-monitor: spool writer of run %s failed", self.run_id)
        finally:
            self._writer_done.set()
            self._wake_sender.set()
        if self._transport is None:
            self._finish()

    def _take_pending(self) -> list[wire.StepRecord]:
        records = []
        while True:
            try:
                records.append(self._pending.popleft())
            except IndexError:
                return records

    def _spool_round(self, *, final: bool) -> None:
        self._writing = True  # set before popping: "queue empty and not writing" means all is on disk
        try:
            flush_target = self._flush_asked
            records = self._take_pending()
            s = self._settings
            round_lines: list[bytes] = []
            for record in records:
                if not self._seg_lines:
                    self._seg_started = time.monotonic()
                line = record_line(record)
                self._seg_lines[record.step] = line
                self._seg_bytes += len(line)
                round_lines.append(line)
                if len(self._seg_lines) >= s.batch_max_steps or self._seg_bytes >= s.batch_max_bytes:
                    self._append(round_lines)
                    round_lines = []
                    self._seal()
            self._append(round_lines)
            aged = self._seg_lines and time.monotonic() - self._seg_started >= s.flush_interval
            if final or aged or flush_target > self._flush_done:
                self._seal()
            self._flush_done = flush_target
        finally:
            self._writing = False

    def _append(self, lines: list[bytes]) -> None:
        if not lines or not self._seg_on_disk:
            return
        if self._segment is None:
            self._segment = self.spool.segment()
        try:
            self._segment.append(lines)
        except SpoolError as exc:
            self._seg_on_disk = False  # this batch stays in memory until it is sealed
            self._warn_once("spool", f"sapo-monitor: {exc}; keeping steps in memory until they are sent")

    def _seal(self) -> None:
        if not self._seg_lines:
            return
        lines = list(self._seg_lines.values())
        segment, self._segment = self._segment, None
        self._seg_lines, self._seg_bytes, self._seg_on_disk = {}, 0, True
        try:
            if segment is None:
                self.spool.put(batch_body(lines))
            else:
                segment.seal(lines)
        except SpoolError as exc:
            if segment is not None:
                segment.discard()
            self._warn_once("spool", f"sapo-monitor: {exc}; keeping steps in memory until they are sent")
            self._keep_in_memory(batch_body(lines), lines)
        self._wake_sender.set()

    def _store(self, records: list[wire.StepRecord]) -> None:
        """Seal records into a batch at once (the caller's thread, when the writer cannot take them)."""
        if not records:
            return
        lines = list({r.step: record_line(r) for r in records}.values())
        body = batch_body(lines)
        try:
            self.spool.put(body)
            return
        except SpoolError as exc:
            self._warn_once("spool", f"sapo-monitor: {exc}; keeping steps in memory until they are sent")
        self._keep_in_memory(body, lines)

    def _keep_in_memory(self, body: bytes, lines: list[bytes]) -> None:
        with self._lock:
            if len(self._memory) < _MEMORY_LIMIT:
                self._memory.append(body)
                return
        log.error("sapo-monitor: LOST %d step(s) of run %s: neither the service nor the spool (%s) took them and "
                  "the in-memory reserve is full", len(lines), self.run_id, self.spool.dir)

    # -------------------------------------------------------------------------------- sender
    def _delivered(self) -> bool:
        return self._transport is None or self.pending_batches == 0

    def _send_loop(self) -> None:
        try:
            while True:
                done = self._writer_done.is_set()
                self._send_pending(closing=done)
                if done:
                    self._retry_until_deadline()
                    break
                wait = 1.0 if self._healthy else max(0.0, self._next_try - time.monotonic())
                self._wake_sender.wait(wait)
                self._wake_sender.clear()
            self._finish()
        except Exception:  # the sender must never die silently; the spool still holds everything
            log.exception("sapo-monitor: delivery of run %s failed; unsent steps stay in %s", self.run_id,
                          self.spool.dir)

    def _send_pending(self, *, closing: bool) -> None:
        assert self._transport is not None
        if not self._healthy and time.monotonic() < self._next_try:
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
            response = self._transport.post_steps(self.run_id, body)
        except TransportError as exc:
            if exc.retryable:
                self._failed(exc)
                return False
            self._refused(exc)
            try:
                if batch_id is None:
                    with self._lock:
                        self._memory.pop(0)
                    batch_id = self.spool.put(body)
                self.spool.reject(batch_id, str(exc))
            except SpoolError as spool_exc:
                log.error("sapo-monitor: LOST a rejected batch of run %s: %s", self.run_id, spool_exc)
            return True
        if batch_id is None:
            with self._lock:
                self._memory.pop(0)
        else:
            self.spool.remove(batch_id)
        self.sent_batches += 1
        self._recovered()
        if response is not None and self.on_response is not None:
            try:
                self.on_response(response)
            except Exception as exc:  # a callback's failure is not a delivery failure
                self._warn_once("on_response", f"sapo-monitor: handling the service's answer failed: {exc}")
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
        self._next_try = time.monotonic() + self._backoff.failed(exc.retry_after)
        self._last_error = exc
        if self._healthy:
            log.warning("sapo-monitor: cannot deliver run %s (%s); steps are kept in %s and retried in the "
                        "background. Training continues.", self.run_id, exc, self.spool.dir)
        self._healthy = False

    def _recovered(self) -> None:
        if not self._healthy:
            log.warning("sapo-monitor: delivery of run %s resumed after %d failed attempt(s)",
                        self.run_id, self._backoff.attempt)
        self._healthy = True
        self._backoff.succeeded()

    def _finish(self) -> None:
        if self._forked:
            return  # a forked child's steps are delivered; the run's status is its parent's to send
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


def _reset_after_fork() -> None:
    for delivery in list(_LIVE):
        delivery._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
