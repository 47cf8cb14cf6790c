"""The real service for the tests: in a thread of the test process (``serve_in_thread``), or as a
uvicorn subprocess that can be killed and started again on the same port (``ServiceProcess``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import uvicorn

from sapo_monitor.demo.server import free_port  # the package's own (the demo needs it too)

__all__ = ["CLI", "ServiceProcess", "free_port", "serve_in_thread"]

CLI = Path(sys.executable).with_name("sapo-monitor")


@contextmanager
def serve_in_thread(app: Any, *, timeout: float = 30.0) -> Iterator[str]:
    """``app`` under uvicorn in a daemon thread on 127.0.0.1 (port chosen by the OS); yields its base URL.

    ``timeout`` bounds both the start and the shutdown."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "service did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


class ServiceProcess:
    """The service as a subprocess on 127.0.0.1:``port`` on the database ``db_url``.

    ``env`` is added to the environment (``SAPO_MONITOR_*`` settings); the output goes to ``log_path``
    (appended to, across restarts) or, without one, to the test process's own stdout/stderr. By default
    it runs ``python -m uvicorn --factory sapo_monitor.service.app:app_from_env``; ``cli=True`` runs
    ``sapo-monitor serve`` instead. ``start`` again after ``kill`` or ``stop`` restarts it on the same
    port and database.
    """

    def __init__(self, db_url: str, *, env: Mapping[str, str] | None = None, port: int | None = None,
                 log_path: Path | None = None, cli: bool = False) -> None:
        self.db_url = db_url
        self.env = dict(env or {})
        self.port = port or free_port()
        self.log_path = log_path
        self.cli = cli
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def command(self) -> list[str]:
        if self.cli:
            return [str(CLI), "serve", "--db", self.db_url, "--port", str(self.port), "--log-level", "warning"]
        return [sys.executable, "-m", "uvicorn", "--factory", "sapo_monitor.service.app:app_from_env",
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]

    def start(self) -> ServiceProcess:
        """Spawn the process (does not wait: see ``wait_ready``)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {**os.environ, "SAPO_MONITOR_DB": self.db_url, **self.env}
        log: IO[bytes] | None = None
        if self.log_path is not None:
            log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        try:
            self.proc = subprocess.Popen(self.command(), env=env, stdout=log,
                                         stderr=subprocess.STDOUT if log else None)
        finally:
            if log is not None:
                log.close()
        return self

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(output in the test's captured stdout/stderr)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float = 60.0) -> ServiceProcess:
        """Wait until ``/readyz`` answers 200; kills the process and raises if it exits or times out."""
        assert self.proc is not None, "not started"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"service did not become ready in {timeout:g} s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the service disappears mid-request, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (uvicorn shuts down cleanly), then SIGKILL if it has not exited after ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
