"""The on-disk spool: every batch is written here before it is sent, and removed once the service took it.

Layout under ``<root>/<run_id>/``::

    run.json                      the run's RunSpec document (+ whether a final status is still to send)
    open/<batch_id>.jsonl         the batch being gathered: one step record per line, appended within
                                  the write-ahead bound (``Segment``); sealed into ``batches/`` when full
    batches/<batch_id>.json.gz    request bodies waiting to be sent, exactly as they will be POSTed
    rejected/<batch_id>.json.gz   bodies the service refused with a final 4xx (bad token, ...)
    rejected/<batch_id>.reason    why, in one line

Batch ids sort in creation order (nanosecond time, pid, counter), so replay keeps the order steps were
recorded in; the service upserts per (run, step), so a replayed batch never doubles a step. Writes are
atomic (temporary file, then rename): a crash leaves either the whole batch or none of it. An open
segment is appended with one ``write`` per round, so a killed process leaves whole lines (a torn last
line, possible only on a machine crash, is skipped); the next process of the run, or an upload, seals
the segments of processes that are gone (``recover_open``). Sealing writes the batch before it removes
the segment, so a crash in between sends those steps twice, which the per-(run, step) upsert absorbs.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sapo_monitor.client import wire
from sapo_monitor.client.errors import SpoolError

__all__ = ["Segment", "Spool", "batch_body", "find_run_dirs", "record_line"]

_BATCH_SUFFIX = ".json.gz"
_OPEN_SUFFIX = ".jsonl"
_counter = itertools.count()


def record_line(record: wire.StepRecord) -> bytes:
    """One step record as a line of an open segment (the same JSON it has in a batch body)."""
    return json.dumps(record.to_wire(), separators=(",", ":"), allow_nan=False).encode() + b"\n"


def batch_body(lines: Iterable[bytes]) -> bytes:
    """The gzip request body of these segment lines: what ``wire.encode_batch`` writes for their records,
    assembled from the JSON already written (no second serialisation)."""
    steps = b",".join(line.rstrip(b"\n") for line in lines)
    return gzip.compress(b'{"schema":%d,"steps":[%s]}' % (wire.SCHEMA_VERSION, steps), compresslevel=5)


def _new_batch_id() -> str:
    return f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}"


class Segment:
    """The open batch of one process: ``append`` puts a round of lines on disk with one write."""

    def __init__(self, spool: Spool) -> None:
        self.batch_id = _new_batch_id()
        self.path = spool.dir / "open" / f"{self.batch_id}{_OPEN_SUFFIX}"
        self._spool = spool
        self._fd: int | None = None

    def append(self, lines: list[bytes]) -> None:
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            data = b"".join(lines)
            while data:  # a regular file takes it all at once; loop for the rare partial write
                data = data[os.write(self._fd, data):]
        except OSError as exc:
            self.close()
            raise SpoolError(f"cannot write {self.path}: {exc}") from exc

    def seal(self, lines: list[bytes]) -> str:
        """Store the whole batch under ``batches/`` (same id), then drop the open file."""
        self.close()
        self._spool.put(batch_body(lines), batch_id=self.batch_id)
        self.discard()
        return self.batch_id

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class Spool:
    """One run's spool folder. Safe to use from several threads of one process."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir).expanduser()
        self.run_id = self.dir.name
        self._batches = self.dir / "batches"
        self._rejected = self.dir / "rejected"
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """A forked child gets its own lock (one held by a parent thread at fork time stays held)."""
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------------- run spec
    def write_run(self, doc: dict[str, Any], *, status_pending: bool = False) -> None:
        payload = {"run_id": self.run_id, "spec": doc, "status_pending": status_pending}
        self._atomic_write(self.dir / "run.json", json.dumps(payload, indent=1, default=str).encode())

    def read_run(self) -> dict[str, Any] | None:
        path = self.dir / "run.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SpoolError(f"cannot read {path}: {exc}") from exc

    # ------------------------------------------------------------------------------------ batches
    def segment(self) -> Segment:
        return Segment(self)

    def recover_open(self) -> int:
        """Seal the open segments of processes that are gone (killed mid-batch); returns how many."""
        sealed = 0
        for name in _names(self.dir / "open", _OPEN_SUFFIX):
            batch_id = name[: -len(_OPEN_SUFFIX)]
            if _pid_alive(batch_id):
                continue  # another live process of this run (a fork, a second process) is appending
            path = self.dir / "open" / name
            try:
                by_step: dict[Any, bytes] = {}  # a step recorded twice: the later line wins
                for line in path.read_bytes().splitlines(keepends=True):
                    step = _step_of(line)
                    if step is not None:
                        by_step[step] = line
                if by_step:
                    self.put(batch_body(by_step.values()), batch_id=batch_id)
                path.unlink(missing_ok=True)
                sealed += 1
            except (OSError, SpoolError):
                continue  # unreadable now: left for a later process or upload
        return sealed

    def put(self, body: bytes, *, batch_id: str | None = None) -> str:
        """Store one request body; returns its batch id."""
        batch_id = batch_id or _new_batch_id()
        self._atomic_write(self._batches / f"{batch_id}{_BATCH_SUFFIX}", body)
        return batch_id

    def pending(self) -> list[str]:
        return self._ids(self._batches)

    def rejected(self) -> list[str]:
        return self._ids(self._rejected)

    def read(self, batch_id: str) -> bytes:
        for folder in (self._batches, self._rejected):
            path = folder / f"{batch_id}{_BATCH_SUFFIX}"
            if path.exists():
                return path.read_bytes()
        raise SpoolError(f"batch {batch_id} is not in {self.dir}")

    def remove(self, batch_id: str) -> None:
        """Forget a delivered batch (pending or rejected); a missing file is fine."""
        with self._lock:
            for folder in (self._batches, self._rejected):
                (folder / f"{batch_id}{_BATCH_SUFFIX}").unlink(missing_ok=True)
                (folder / f"{batch_id}.reason").unlink(missing_ok=True)

    def reject(self, batch_id: str, reason: str) -> None:
        """Move a batch out of the automatic replay, keeping it (and why) for a manual upload."""
        with self._lock:
            try:
                self._rejected.mkdir(parents=True, exist_ok=True)
                os.replace(self._batches / f"{batch_id}{_BATCH_SUFFIX}", self._rejected / f"{batch_id}{_BATCH_SUFFIX}")
                (self._rejected / f"{batch_id}.reason").write_text(reason + "\n")
            except OSError as exc:
                raise SpoolError(f"cannot move batch {batch_id} to {self._rejected}: {exc}") from exc

    # ------------------------------------------------------------------------------------ helpers
    def _ids(self, folder: Path) -> list[str]:
        return [n[: -len(_BATCH_SUFFIX)] for n in _names(folder, _BATCH_SUFFIX)]

    def _atomic_write(self, path: Path, data: bytes) -> None:
        with self._lock:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                raise SpoolError(f"cannot write {path}: {exc}") from exc


def find_run_dirs(path: Path) -> list[Path]:
    """``path`` itself when it is one run's spool, else the run spools directly inside it."""
    path = Path(path).expanduser()
    if _is_run_dir(path):
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and _is_run_dir(p))


def _is_run_dir(path: Path) -> bool:
    return (path / "run.json").is_file() or any((path / d).is_dir() for d in ("batches", "rejected", "open"))


def _names(folder: Path, suffix: str) -> list[str]:
    try:
        names = os.listdir(folder)
    except OSError:  # not there (yet), or the spool cannot exist there at all
        return []
    return sorted(n for n in names if n.endswith(suffix) and not n.startswith("."))


def _pid_alive(batch_id: str) -> bool:
    try:
        pid = int(batch_id.split("-")[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False  # our own open segments: a previous Delivery of this run in this process is closed
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _step_of(line: bytes) -> Any:
    """The step of one segment line; None for a line torn by a machine crash mid-write."""
    if not line.endswith(b"\n"):
        return None
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None
