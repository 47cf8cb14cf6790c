"""A training process for the kill tests: ends steps in a loop and prints each one as it ends.

    python -m tests.client.steps_proc SPOOL_ROOT RUN_ID [SERVER] [--trainer-handler] [--interval S]

Each line on stdout is ``<step> <time.time()>``, printed after ``end_step`` returned. With
``--trainer-handler`` the "trainer" installs its own SIGTERM handler before ``init`` (it prints
``trainer-handler`` and exits 3), so the tests see the client chain to it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from sapo_monitor.client import init
from sapo_monitor.client.settings import ClientSettings


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spool")
    p.add_argument("run")
    p.add_argument("server", nargs="?")
    p.add_argument("--trainer-handler", action="store_true")
    p.add_argument("--interval", type=float, default=0.002)
    args = p.parse_args()
    if args.trainer_handler:
        def on_term(signum: int, frame: FrameType | None) -> None:
            print("trainer-handler", flush=True)
            sys.exit(3)

        signal.signal(signal.SIGTERM, on_term)
    settings = ClientSettings(spool_dir=Path(args.spool), server=args.server, timeout=30.0, close_timeout=0.5,
                              max_backoff=0.5)
    mon = init(args.run, settings=settings)
    step = 0
    while True:
        mon.end_step(step, loss=float(step), metrics={f"custom.m{i}": float(i) for i in range(20)})
        print(step, time.time(), flush=True)
        step += 1
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
