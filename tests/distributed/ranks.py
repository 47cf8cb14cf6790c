"""Run a function on N real processes joined by a gloo ``torch.distributed`` group (spawned, 127.0.0.1)."""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn: Callable[..., Any], rank: int, world: int, port: int, out: str, kwargs: dict[str, Any]) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    result = fn(rank, world, Path(out), **kwargs)
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


def run_ranks(fn: Callable[..., Any], world: int, out: Path, timeout: float = 120.0, **kwargs: Any) -> list[Any]:
    """``fn(rank, world, out, **kwargs)`` on ``world`` processes; each one's JSON-able result (None for a
    process that died before returning: the exit code is then in ``exitcodes``)."""
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(fn, r, world, port, str(out), kwargs)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    results = []
    for r in range(world):
        path = out / f"rank{r}.json"
        results.append(json.loads(path.read_text()) if path.exists() else None)
    run_ranks.exitcodes = [p.exitcode for p in procs]  # type: ignore[attr-defined]
    return results
