"""A loopback TCP proxy that can make a real server (PostgreSQL) fail the ways networks do.

``TcpProxy(("127.0.0.1", 5432)).start()`` listens on 127.0.0.1:``port`` and forwards to the target.
:meth:`TcpProxy.set_mode`:

* ``forward``: pass bytes both ways;
* ``refuse``: stop listening (new connections are refused) and reset the open ones;
* ``blackhole``: accept new connections but never reach the target, and swallow every byte on the
  open ones in both directions (what a partition or a stalled load balancer looks like to a client).

:meth:`TcpProxy.cut` resets every open connection (what a failover or a NAT timeout leaves behind).
Going back to ``forward`` does not revive a connection that saw a blackhole: its bytes are lost, so,
as after a real stall, it is dead to its client.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading

__all__ = ["TcpProxy"]


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.dead = upstream is None  # born in a blackhole: never forwards

    def close(self, reset: bool = True) -> None:
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                if reset:  # RST instead of FIN, as a dropped connection looks
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()


class TcpProxy:
    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.port = port
        self.mode = "forward"
        self._pairs: set[_Pair] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._closed = threading.Event()

    def start(self) -> TcpProxy:
        self._listen()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url_for(self, url: str) -> str:
        """``url`` (``postgresql://user@host:port/db``) pointed at the proxy instead."""
        host, port = self.target
        return url.replace(f"{host}:{port}", self.address)

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), name="tcp-proxy-accept", daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: refuse mode, or the proxy stopped
            upstream: socket.socket | None = None
            if self.mode == "forward":
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    client.close()
                    continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), name="tcp-proxy-pump", daemon=True).start()

    def _pump(self, pair: _Pair) -> None:
        socks = [pair.client] + ([pair.upstream] if pair.upstream is not None else [])
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select(socks, [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.mode == "blackhole":
                        pair.dead = True
                    if pair.dead:
                        continue  # swallowed
                    other = pair.upstream if sock is pair.client else pair.client
                    assert other is not None
                    other.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._pairs.discard(pair)
            pair.close(reset=False)

    def set_mode(self, mode: str) -> None:
        assert mode in ("forward", "refuse", "blackhole"), mode
        previous, self.mode = self.mode, mode
        if mode == "refuse":
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            self.cut()
        elif previous == "refuse":
            self._listen()

    def cut(self) -> None:
        """Reset every open connection."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            pair.close(reset=True)

    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def stop(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.cut()
