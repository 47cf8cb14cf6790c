"""Data-parallel runs: every rank's tokens in rank 0's one record per optimizer step.

Each rank turns its step into a :class:`~sapo_monitor.client.stats.summary.StepSummary` (a few KB) and,
on ranks other than 0, writes it to the job's c10d key-value store (the rendezvous store every
``torch.distributed`` job already has; keys under a prefix naming the group's ranks). Rank 0 reads its
peers' summaries on a background thread, merges them, builds the record and hands it to delivery, so
neither the training thread nor any NCCL stream ever waits on the monitor: a collective would make every
rank wait for the slowest one, and gloo's only timeout is the group's. Each peer gets ``timeout``
seconds per step, counted from when rank 0's summary is ready or, if later, from when rank 0's collector
gets to the step (after waiting for a stalled peer on the step before, say): the time is never shorter
than ``timeout`` after the peer could have written. A peer that has not written in time is left out of
that step (``ranks_reporting`` < ``ranks_total`` in the record, a warning logged once) and is then only
checked, not waited for, until it has written the last step it missed: it is alive and has caught up, and
is waited for again (so a live rank running slightly behind rank 0 does not drop out of every later
record). A live peer lags rank 0 by at most about a step in data-parallel training, where every optimizer step
all-reduces the gradients, so ``timeout`` (default 5 s) only has to cover the monitor's own time on a
peer (its ``end_step``) and scheduling delays on a loaded machine.

Why the store and not a dedicated gloo group (``new_group(backend="gloo", timeout=...)``, which issue 13
first proposed): the guarantee is that a crashed or stalled peer never hangs the others and costs at most
one step's records. A gloo collective cannot give it. Every rank in it blocks until the slowest arrives
(each step, on whichever thread runs it), and a peer that misses the group's timeout once closes the
group for good: measured here (torch 2.13, 3 gloo ranks, timeout 2 s, rank 2 asleep 4 s on step 1), ranks
0 and 1 raise after 2 s on step 1 and every later all-reduce fails at once with "Application timeout
caused pair closure", on rank 2 too once it is back, so the monitor would be blind for the rest of the
run after one slow step, and a rank that skipped a step would pair the wrong summaries from then on.
Creating the group is itself a collective every rank of the job must call in the same order, which an
adapter that starts on a subset of ranks (verl's model-parallel source ranks) cannot ensure. The store
keeps the group's useful properties (CPU only, no NCCL stream, created with the job) and adds a timeout
per peer and step, not per group: a missing peer is waited for once, then only checked. Its cost is a few
store round-trips per peer and step (a ``set`` on the peer; ``wait``, ``get``, ``delete`` on rank 0, off
the training thread) and the summary's bytes (``bench/distributed_row.py`` reports both).

Only rank 0 delivers: the other ranks never open a connection or a spool. The data-parallel group is the
caller's (``init(process_group=G)``): under tensor / pipeline / sequence parallelism pass a group with
one rank per data-parallel replica (e.g. the ranks with tensor-parallel rank 0 on the last pipeline
stage); ranks outside the group record nothing, so tokens held by several model-parallel ranks are
counted once. Without a group, an initialised default group is used (logged once).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sapo_monitor.client import wire
from sapo_monitor.client._deferred import record_from_stats
from sapo_monitor.client.stats.summary import StepSummary, merge

__all__ = ["DEFAULT_RANK_TIMEOUT", "RankReducer", "StoreExchange", "data_parallel_group"]

log = logging.getLogger("sapo_monitor.client")
DEFAULT_RANK_TIMEOUT = 5.0  # seconds rank 0 waits for a peer's step summary


def data_parallel_group(process_group: Any) -> Any:
    """The group to reduce over: ``process_group``, else the default group when ``torch.distributed`` is
    initialised with more than one rank, else None (a single process: no reduction)."""
    if process_group is not None:
        return process_group
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    log.info("sapo-monitor: torch.distributed is initialised and no process_group was given: reducing over "
             "the default group (%d ranks); pass init(process_group=...) with the data-parallel group under "
             "model parallelism", dist.get_world_size())
    return dist.group.WORLD


class StoreExchange:
    """Step summaries through the c10d store: ``send`` on ranks > 0, ``receive`` on rank 0."""

    _created = 0

    def __init__(self, group: Any, store: Any = None) -> None:
        import torch.distributed as dist

        self.rank = dist.get_rank(group)  # -1: this process is not in the group
        self.size = dist.get_world_size(group)
        ranks = dist.get_process_group_ranks(group)
        # The rendezvous store: public API has none for a group, the default one serves every group.
        base = store if store is not None else dist.distributed_c10d._get_default_store()
        # Numbered per process: ranks create their monitors in the same order, so successive monitors
        # of one job (a second run, a test) never read each other's keys.
        StoreExchange._created += 1
        self._store = dist.PrefixStore(f"sapo_monitor/{'-'.join(map(str, ranks))}/{StoreExchange._created}/", base)

    def send(self, seq: int, data: bytes) -> None:
        # The stub says str; the binding takes bytes as well (and get returns bytes).
        self._store.set(f"{seq}/{self.rank}", data)  # type: ignore[arg-type]

    def receive(self, seq: int, peer: int, timeout: float) -> bytes | None:
        """The peer's summary of step ``seq`` (deleted from the store), or None after ``timeout`` seconds."""
        key = f"{seq}/{peer}"
        try:
            if timeout <= 0:
                if not self._store.check([key]):
                    return None
            else:
                self._store.wait([key], timedelta(seconds=timeout))
            data = self._store.get(key)
        except Exception:  # the store's timeout (DistStoreError) or a store that went away
            return None
        self.discard(seq, peer)
        return bytes(data)

    def present(self, seq: int, peer: int) -> bool:
        """Whether the peer's summary of step ``seq`` is in the store (one round-trip, no wait)."""
        try:
            return bool(self._store.check([f"{seq}/{peer}"]))
        except Exception:  # the store went away
            return False

    def discard(self, seq: int, peer: int) -> None:
        with contextlib.suppress(Exception):  # the store went away: nothing left to clean
            self._store.delete_key(f"{seq}/{peer}")


@dataclass
class _Step:
    seq: int
    step: int
    time: float
    summary: StepSummary
    values: dict[str, float]
    arrived: float  # monotonic time rank 0 had its own summary


class RankReducer:
    """Per optimizer step: ranks > 0 send their summary; rank 0 merges all and emits the one record."""

    def __init__(self, exchange: StoreExchange, *, emit: Callable[[wire.StepRecord], None],
                 warn: Callable[[str, str], None], timeout: float = DEFAULT_RANK_TIMEOUT) -> None:
        self.exchange = exchange
        self.rank, self.size = exchange.rank, exchange.size
        self.timeout = timeout
        self._emit = emit
        self._warn = warn
        self._seq = 0
        self._missing: dict[int, list[int]] = {}  # peer -> the steps (seq) it did not send in time
        self.reduce_seconds = 0.0  # rank 0: time spent receiving and merging (for the bench)
        self.bytes_received = 0
        self.send_seconds = 0.0  # ranks > 0: time spent encoding and writing summaries
        self._queue: queue.Queue[_Step | None] = queue.Queue()
        self._emitted = threading.Condition()
        self._records: dict[int, wire.StepRecord] = {}  # the last few merged records, for wait_record
        self._thread: threading.Thread | None = None
        if self.rank == 0:
            self._thread = threading.Thread(target=self._run, name="sapo-monitor-reduce", daemon=True)
            self._thread.start()

    def submit(self, step: int, when: float, summary: StepSummary, values: dict[str, float]) -> int:
        """This rank's summary of the step (empty when it has nothing or its statistics failed); the step's
        sequence number, for :meth:`wait_record`."""
        seq, self._seq = self._seq, self._seq + 1
        if self.rank != 0:
            t0 = time.perf_counter()
            try:
                self.exchange.send(seq, summary.encode())
                self.send_seconds += time.perf_counter() - t0
            except Exception as exc:
                self._warn("rank-send", f"sapo-monitor: rank {self.rank} could not send step {step}: {exc}")
            return seq
        self._queue.put(_Step(seq, step, when, summary, values, time.monotonic()))
        return seq

    def wait_record(self, seq: int, timeout: float) -> wire.StepRecord | None:
        """Rank 0: the merged record of step ``seq`` once built (None after ``timeout`` seconds)."""
        with self._emitted:
            self._emitted.wait_for(lambda: seq in self._records, timeout)
            return self._records.get(seq)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._reduce(job)
            except Exception as exc:  # never let the collector die: the next steps still get records
                self._warn(f"reduce-{type(exc).__name__}", f"sapo-monitor: reducing a step failed: {exc}")
            finally:
                self._queue.task_done()

    def _reduce(self, job: _Step) -> None:
        summaries = [job.summary]
        started = time.perf_counter()
        # A peer's time on this step counts from rank 0's summary or, if later, from now: a wait on an
        # earlier step (for a stalled peer) does not shorten it.
        deadline = max(job.arrived, time.monotonic()) + self.timeout
        waited = 0.0
        for peer in range(1, self.size):
            missed = self._missing.get(peer)
            if missed is not None and self.exchange.present(missed[-1], peer):
                missed = None  # it wrote the last step it missed: alive, caught up, so wait for it again
            wait = 0.0 if missed is not None else deadline - time.monotonic()
            t0 = time.perf_counter()
            data = self.exchange.receive(job.seq, peer, wait)
            waited += time.perf_counter() - t0
            if data is None:
                missed = self._missing.get(peer)
                if missed is None:
                    self._warn(f"rank-{peer}", f"sapo-monitor: rank {peer} sent no summary of step {job.step} within "
                                               f"{self.timeout:g}s; records leave it out (ranks_reporting) until it does")
                    missed = self._missing.setdefault(peer, [])
                missed.append(job.seq)
                continue
            if peer in self._missing:  # back: forget the summaries it may still write for the steps it missed
                for seq in self._missing.pop(peer):
                    self.exchange.discard(seq, peer)
            self.bytes_received += len(data)
            summaries.append(StepSummary.decode(data))
        present = [s for s in summaries if not s.empty]
        record = record_from_stats(job.step, job.time, merge(present).stats(), job.values)
        record.metrics["ranks_reporting"] = float(len(present))
        record.metrics["ranks_total"] = float(self.size)
        # Time spent merging, not waiting for peers that are still computing their step.
        self.reduce_seconds += time.perf_counter() - started - waited
        self._emit(record)
        with self._emitted:
            self._records[job.seq] = record
            for old in [k for k in self._records if k <= job.seq - 8]:
                del self._records[old]
            self._emitted.notify_all()

    def flush(self, timeout: float) -> bool:
        """Rank 0: wait until every submitted step is reduced and emitted. True when done."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float | None = None) -> None:
        if self._thread is None:
            return
        self.flush(self.timeout * self.size + 5.0 if timeout is None else timeout)
        self._queue.put(None)
        self._thread.join(timeout=1.0)
        self._thread = None
