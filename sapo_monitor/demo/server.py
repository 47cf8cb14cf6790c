"""Start ``sapo-monitor serve`` as a background process and wait until it is ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["ServiceProcess", "free_port", "port_is_free", "start_service"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class ServiceProcess:
    """A running service: its base URL, the process, and the file its logs go to."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn shuts down cleanly), then SIGKILL if it does not exit in time."""
        if not self.running():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(
    db_url: str, port: int, log_path: Path, *, env: dict[str, str] | None = None, timeout: float = 60.0
) -> ServiceProcess:
    """Run ``sapo-monitor serve`` on 127.0.0.1:``port`` against ``db_url``; return once /readyz is 200.

    Raises ``RuntimeError`` with the end of the service's log when it exits or is not ready in time.
    """
    cmd = [
        sys.executable,
        "-m",
        "sapo_monitor",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db",
        db_url,
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    service = ServiceProcess(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.running():
            raise RuntimeError(f"the service exited with code {process.returncode}:\n{service.log_tail()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=2.0).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"the service was not ready after {timeout:.0f} s:\n{service.log_tail()}")
