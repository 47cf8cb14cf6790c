"""Training-process faults: SIGKILL and SIGTERM of a process recording steps, with the service up, slow,
hung or down. Prints, per case: steps ended, lost, doubled, corrupted, and the client's loss window
(seconds between the earliest lost step's end and the kill; 0 when nothing was lost).

    .venv/bin/python bench/faults.py [--runs 2] [--after 1.5]

"up" is a real HTTP receiver on 127.0.0.1 (tests/client/receiver.py: one record per (run, step));
"slow" answers every request after 3 s with 503 + Retry-After; "hung" accepts connections in the kernel
and never answers; "down" is a closed port. The training process is tests/client/steps_proc.py (ends a
step every 2 ms, 21 metrics each). What is "stored" is what the receiver holds plus what the spool
holds after the run's open segments are sealed (what the next process or an upload sends).
Webhook and database faults are in bench/faults_delivery.py. ``--scenario service-kill`` runs the
service SIGKILL mid-ingest case instead (bench/faults_service_kill.py: a real ``sapo-monitor serve`` on
SQLite and PostgreSQL killed and restarted under a streaming client); ``all`` runs both.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sapo_monitor.client._spool import Spool  # noqa: E402

from tests.client.receiver import Receiver  # noqa: E402


@contextlib.contextmanager
def service(mode: str) -> Iterator[tuple[str | None, Receiver | None]]:
    if mode == "up":
        rx = Receiver().start()
        try:
            yield rx.url, rx
        finally:
            rx.stop()
        return
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    if mode == "down":
        sock.close()
        yield url, None
        return
    sock.listen(128)
    stop = threading.Event()
    if mode == "slow":
        def answer(conn: socket.socket) -> None:
            with conn:
                time.sleep(3.0)
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")

        def serve() -> None:
            sock.settimeout(0.2)
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    conn, _ = sock.accept()
                    threading.Thread(target=answer, args=(conn,), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
    try:
        yield url, None  # hung: never accepted
    finally:
        stop.set()
        sock.close()


def one_case(sig: signal.Signals, mode: str, after: float, tmp: Path, n: int) -> dict[str, float]:
    run = f"f-{sig.name.lower()}-{mode}-{n}"
    with service(mode) as (url, rx):
        proc = subprocess.Popen([sys.executable, "-m", "tests.client.steps_proc", str(tmp), run, url or ""],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        ended: list[tuple[int, float]] = []
        for line in proc.stdout:
            ended.append((int(line.split()[0]), float(line.split()[1])))
            if len(ended) >= 30:
                break
        time.sleep(after)
        killed_at = time.time()
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
        ended += [(int(a), float(b)) for a, b in (ln.split() for ln in rest.splitlines() if ln[:1].isdigit())]
        spool = Spool(tmp / run)
        spool.recover_open()
        spooled: list[dict] = []
        for batch_id in spool.pending():
            spooled += json.loads(gzip.decompress(spool.read(batch_id)))["steps"]
        delivered = dict(rx.steps.get(run, {})) if rx is not None else {}
    stored: dict[int, dict] = dict(delivered)
    steps_in_spool = [s["step"] for s in spooled]
    for s in spooled:
        stored[s["step"]] = s
    doubled = len(steps_in_spool) - len(set(steps_in_spool))
    corrupted = sum(1 for step, doc in stored.items() if doc["metrics"].get("loss") != float(step))
    lost = [t for step, t in ended if step not in stored]
    return {"ended": len(ended), "lost": len(lost), "doubled": doubled, "corrupted": corrupted,
            "window": killed_at - min(lost) if lost else 0.0, "rc": proc.returncode or 0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2, help="kills per case")
    p.add_argument("--after", type=float, default=1.5, help="seconds of recording (after step 30) before the kill")
    p.add_argument("--scenario", choices=("training", "service-kill", "all"), default="all",
                   help="training-process kills, service SIGKILL mid-ingest, or both")
    args = p.parse_args()
    if args.scenario in ("service-kill", "all"):
        from bench.faults_service_kill import service_kill_case

        print(f"{'service SIGKILL':16} {'ended':>7} {'at kill':>7} {'lost':>5} {'doubled':>7} {'corrupt':>7} "
              f"{'spooled':>7}")
        for kind in ("sqlite", "postgres"):
            for _ in range(args.runs):
                r = service_kill_case(kind)
                print(f"{kind:16} {r['ended']:7.0f} {r['killed_at']:7.0f} {r['lost']:5.0f} {r['doubled']:7.0f} "
                      f"{r['corrupted']:7.0f} {r['spooled']:7.0f}", flush=True)
        if args.scenario == "service-kill":
            return
    print(f"{'signal':8} {'service':8} {'ended':>7} {'lost':>5} {'doubled':>7} {'corrupt':>7} {'window s':>9}  exit")
    with tempfile.TemporaryDirectory(prefix="sapo-faults-") as tmp:
        for sig in (signal.SIGKILL, signal.SIGTERM):
            for mode in ("up", "slow", "hung", "down"):
                for n in range(args.runs):
                    r = one_case(sig, mode, args.after, Path(tmp), n)
                    print(f"{sig.name:8} {mode:8} {r['ended']:7.0f} {r['lost']:5.0f} {r['doubled']:7.0f} "
                          f"{r['corrupted']:7.0f} {r['window']:9.3f}  {r['rc']:.0f}", flush=True)


if __name__ == "__main__":
    main()
