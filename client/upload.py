"""Send a spool (an offline run, or what a run could not deliver) to the service, idempotently.

Used by ``sapo-monitor upload DIR --server URL``. For each run folder with something to send: PUT the
run's metadata without a status (an existing run keeps its own: a second upload never flips a finished run
back to running), POST every stored batch in creation order (pending ones, then those the service once
rejected), delete each batch once the service took it (unless ``keep``), then PUT the run's final status
if one is still to send. A folder with no batches and no pending status is left alone (no phantom runs).
The service upserts per (run, step), so uploading twice, or after a partial upload, never doubles a step.
Retryable failures wait by the client's one backoff policy (``_backoff``).
"""

from __future__ import annotations

import functools
import gzip
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sapo_monitor.client._backoff import Backoff
from sapo_monitor.client._spool import Spool, find_run_dirs
from sapo_monitor.client._transport import HttpTransport, Transport
from sapo_monitor.client.errors import SpoolError, TransportError

__all__ = ["UploadResult", "count_steps", "plan_upload", "upload_spool"]

_ATTEMPTS = 5  # per request, for retryable failures (service restarting...)
_MAX_WAIT = 30.0  # seconds: the cap of one wait between attempts


@dataclass
class UploadResult:
    runs: list[str] = field(default_factory=list)
    batches_sent: int = 0
    steps_sent: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def plan_upload(path: Path, *, include_rejected: bool = True) -> list[tuple[Spool, list[str]]]:
    """The runs under ``path`` with something to send, and the batch ids each would send, in order.

    Open segments of processes that are gone (killed mid-batch) are sealed first, so they are sent too.
    """
    plan = []
    for run_dir in find_run_dirs(path):
        spool = Spool(run_dir)
        spool.recover_open()
        ids = spool.pending() + (spool.rejected() if include_rejected else [])
        if ids or _status_pending(spool):
            plan.append((spool, ids))
    return plan


def _status_pending(spool: Spool) -> bool:
    try:
        meta = spool.read_run() or {}
    except SpoolError:
        return False
    return bool(meta.get("status_pending"))


def count_steps(body: bytes) -> int:
    data = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
    return len(json.loads(data).get("steps", []))


def upload_spool(
    path: Path,
    server: str | None = None,
    token: str | None = None,
    *,
    keep: bool = False,
    include_rejected: bool = True,
    transport: Transport | None = None,
    on_batch: Callable[[str, int], None] | None = None,
) -> UploadResult:
    """Upload every run spool under ``path``; ``on_batch(run_id, steps)`` after each batch sent."""
    if transport is None:
        if not server:
            raise ValueError("upload needs a server URL (or a transport)")
        transport = HttpTransport(server, token)
    result = UploadResult()
    try:
        for spool, ids in plan_upload(path, include_rejected=include_rejected):
            _upload_run(spool, ids, transport, result, keep=keep, on_batch=on_batch)
    finally:
        transport.close()
    return result


def _upload_run(spool: Spool, ids: list[str], transport: Transport, result: UploadResult, *, keep: bool,
                on_batch: Callable[[str, int], None] | None) -> None:
    run_id = spool.run_id
    result.runs.append(run_id)
    try:
        meta = spool.read_run() or {}
    except SpoolError as exc:
        result.errors.append(str(exc))
        meta = {}
    spec = dict(meta.get("spec") or {})
    final_status = spec.pop("status", None)
    # No status here: a new run starts as running, an existing one keeps its status.
    if spec and ids and not _call(lambda: transport.put_run(run_id, spec), result):
        return
    for batch_id in ids:
        try:
            body = spool.read(batch_id)
        except SpoolError:
            continue  # sent and removed by a live process of this run meanwhile
        if not _call(functools.partial(transport.post_steps, run_id, body), result, what=f"{run_id}/{batch_id}"):
            continue
        steps = count_steps(body)
        result.batches_sent += 1
        result.steps_sent += steps
        if not keep:
            spool.remove(batch_id)
        if on_batch is not None:
            on_batch(run_id, steps)
    remaining = spool.pending() + spool.rejected() if not keep else []
    if meta.get("status_pending") and final_status and not remaining:
        doc = {**spec, "status": final_status}
        if _call(lambda: transport.put_run(run_id, doc), result):
            spool.write_run(doc)


def _call(fn: Callable[[], object], result: UploadResult, what: str = "") -> bool:
    backoff = Backoff(cap=_MAX_WAIT)
    for attempt in range(_ATTEMPTS):
        try:
            fn()
            return True
        except TransportError as exc:
            if not exc.retryable or attempt == _ATTEMPTS - 1:
                result.errors.append(f"{what}: {exc}" if what else str(exc))
                return False
            time.sleep(backoff.failed(exc.retry_after))
    return False
