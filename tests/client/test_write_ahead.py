"""Write-ahead and signals with real training processes: what a SIGKILL or a SIGTERM leaves in the spool
while the service hangs (connections accepted by the kernel, never answered), and a forked child."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sapo_monitor.client import init
from sapo_monitor.client._delivery import SPOOL_INTERVAL
from sapo_monitor.client._spool import Spool

from tests.client.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hung_server():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # never accepted: every request waits for its timeout
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def _spooled(spool: Spool) -> list[int]:
    spool.recover_open()
    steps: list[int] = []
    for batch_id in spool.pending():
        steps += [s["step"] for s in json.loads(gzip.decompress(spool.read(batch_id)))["steps"]]
    return steps


def _start(tmp_path: Path, run: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.client.steps_proc", str(tmp_path / "spool"), run, *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _run_until(proc: subprocess.Popen[str], step: int) -> int:
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line.split()[0]) >= step:
            return step
    raise AssertionError("the training process ended early")


def _ended(proc: subprocess.Popen[str], out: str) -> list[tuple[int, float]]:
    return [(int(a), float(b)) for a, b in (ln.split() for ln in out.splitlines() if ln[:1].isdigit())]


def test_sigkill_loses_at_most_the_write_ahead_window_while_the_service_hangs(tmp_path, hung_server):
    proc = _start(tmp_path, "wa-kill", hung_server)
    _run_until(proc, 30)
    time.sleep(1.0)  # a POST is hanging by now: the old single thread held everything in memory here
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    ended = _ended(proc, rest)
    stored = _spooled(Spool(tmp_path / "spool" / "wa-kill"))
    assert len(stored) == len(set(stored))  # nothing doubled
    lost = [t for step, t in ended if step not in set(stored)]
    window = killed_at - min(lost) if lost else 0.0
    assert window < SPOOL_INTERVAL + 0.5, f"lost {len(lost)} steps ending {window:.2f}s before the kill"
    assert max(stored) >= max(s for s, _ in ended) - 200


def test_sigterm_spools_every_ended_step_and_dies_by_the_signal(tmp_path, hung_server):
    proc = _start(tmp_path, "wa-term", hung_server)
    _run_until(proc, 30)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM  # the default action still happens: never swallowed
    last = max([30] + [step for step, _ in _ended(proc, rest)])
    stored = _spooled(Spool(tmp_path / "spool" / "wa-term"))
    assert sorted(stored) == list(range(len(stored))) and len(stored) >= last + 1


def test_sigterm_chains_to_the_trainers_own_handler(tmp_path):
    proc = _start(tmp_path, "wa-chain", "--trainer-handler")  # offline
    _run_until(proc, 20)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    assert "trainer-handler" in rest and proc.returncode == 3
    last = max([20] + [step for step, _ in _ended(proc, rest)])
    spool = Spool(tmp_path / "spool" / "wa-chain")
    # every step that ended is spooled, once; the signal may land between a step's end_step and its
    # print, so one more step than printed can be there
    stored = sorted(_spooled(spool))
    assert stored == list(range(len(stored))) and last + 1 <= len(stored) <= last + 2
    assert spool.read_run()["spec"]["status"] == "finished"  # sys.exit ran atexit: the monitor closed


def test_a_forked_child_delivers_its_own_steps_and_leaves_the_run_to_its_parent(tmp_path):
    rx = Receiver().start()
    try:
        mon = init("wa-fork", server=rx.url, spool_dir=tmp_path / "spool")
        for s in range(5):
            mon.end_step(s, loss=1.0)
        assert mon.flush(10)
        pid = os.fork()
        if pid == 0:  # a data-loader worker that records steps of its own
            code = 1
            try:
                for s in range(100, 105):
                    mon.end_step(s, loss=2.0)
                code = 0 if mon.flush(10) else 2
                mon.close()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert rx.runs["wa-fork"]["status"] == "running"  # the child did not finish the parent's run
        for s in range(5, 8):
            mon.end_step(s, loss=1.0)
        mon.close()
        assert rx.step_numbers("wa-fork") == [*range(8), *range(100, 105)]
        assert rx.runs["wa-fork"]["status"] == "finished"
    finally:
        rx.stop()
