"""The on-disk spool: every batch is written here before it is sent, and removed once the service took it.

Layout under ``<root>/<run_id>/``::

    run.json                      the run's RunSpec document (+ whether a final status is still to send)
    batches/<batch_id>.json.gz    request bodies waiting to be sent, exactly as they will be POSTed
    rejected/<batch_id>.json.gz   bodies the service refused with a final 4xx (bad token, ...)
    rejected/<batch_id>.reason    why, in one line

Batch ids sort in creation order (nanosecond time, pid, counter), so replay keeps the order steps were
recorded in; the service upserts per (run, step), so a replayed batch never doubles a step. Writes are
atomic (temporary file, then rename): a crash leaves either the whole batch or none of it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from sapo_monitor.client.errors import SpoolError

__all__ = ["Spool", "find_run_dirs"]

_BATCH_SUFFIX = ".json.gz"
_counter = itertools.count()


class Spool:
    """One run's spool folder. Safe to use from several threads of one process."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir).expanduser()
        self.run_id = self.dir.name
        self._batches = self.dir / "batches"
        self._rejected = self.dir / "rejected"
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
    def put(self, body: bytes) -> str:
        """Store one request body; returns its batch id."""
        batch_id = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}"
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
        try:
            names = os.listdir(folder)
        except OSError:  # not there (yet), or the spool cannot exist there at all
            return []
        return sorted(n[: -len(_BATCH_SUFFIX)] for n in names if n.endswith(_BATCH_SUFFIX))

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
    return (path / "run.json").is_file() or (path / "batches").is_dir() or (path / "rejected").is_dir()
