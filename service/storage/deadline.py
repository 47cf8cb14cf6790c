"""A client-side deadline on PostgreSQL connections: a connection that does not answer is cut.

The server's ``statement_timeout`` cannot help when the server never sees the statement (a network
that drops packets, a stalled proxy, a half-dead connection after a failover), and TCP keepalive
does not notice a peer whose kernel still acknowledges. So each pooled connection is given a
deadline when it is checked out and again before every statement, commit and rollback; one watchdog
thread shuts down the socket of any connection still busy past its deadline. The blocked call then
fails at once with a disconnect error, SQLAlchemy invalidates the connection (and the pool's older
ones), the request answers 503, and the next checkout opens a fresh connection.

A checkout also pings the connection under the same watchdog (the pool's own ``pool_pre_ping`` would
block without bound on a dead peer) and hands back a fresh one when the ping fails.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import Engine, event, exc

__all__ = ["install_deadlines"]

log = logging.getLogger("sapo_monitor.db")


class _Watchdog:
    """Deadlines by connection (keyed by ``id`` of the DBAPI connection), checked every ``tick_s``."""

    def __init__(self, tick_s: float = 0.2) -> None:
        self.tick_s = tick_s
        self._deadlines: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.cut = 0  # connections shut down so far (for tests and logs)

    def arm(self, dbapi_conn: Any, seconds: float) -> None:
        with self._lock:
            self._deadlines[id(dbapi_conn)] = (time.monotonic() + seconds, dbapi_conn)
            if self._thread is None or not self._thread.is_alive():  # lazily, and again after a fork
                self._thread = threading.Thread(target=self._run, name="sapo-db-deadline", daemon=True)
                self._thread.start()

    def disarm(self, dbapi_conn: Any) -> None:
        with self._lock:
            self._deadlines.pop(id(dbapi_conn), None)

    def _run(self) -> None:
        while True:
            time.sleep(self.tick_s)
            now = time.monotonic()
            with self._lock:
                late = [(k, c) for k, (d, c) in self._deadlines.items() if d <= now]
                for k, _ in late:
                    del self._deadlines[k]
            for _, conn in late:
                self._shutdown(conn)

    def _shutdown(self, dbapi_conn: Any) -> None:
        try:
            fd = dbapi_conn.pgconn.socket
        except Exception:  # already closed: nothing to cut
            return
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
            self.cut += 1
            log.warning("database connection did not answer in time: cut it (the call fails and is retried "
                        "on a fresh connection)")
        except OSError:
            pass


WATCHDOG = _Watchdog()


def install_deadlines(engine: Engine, *, statement_s: float, ping_s: float) -> None:
    """Give ``engine``'s connections a deadline of ``statement_s`` per statement (and per commit or
    rollback) and ``ping_s`` for the ping on checkout."""

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        WATCHDOG.arm(dbapi_conn, ping_s)
        try:
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True  # no transaction for the ping (one round trip)
            dbapi_conn.execute("SELECT 1")
            dbapi_conn.autocommit = autocommit
        except Exception as err:  # dead: the pool invalidates it and connects again
            raise exc.DisconnectionError(f"connection failed its ping: {type(err).__name__}") from err
        WATCHDOG.arm(dbapi_conn, statement_s)

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn is not None:
            WATCHDOG.disarm(dbapi_conn)

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, _statement: Any, _params: Any, _context: Any, _many: Any) -> None:
        WATCHDOG.arm(conn.connection.dbapi_connection, statement_s)

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _end(conn: Any) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        if dbapi_conn is not None:
            WATCHDOG.arm(dbapi_conn, statement_s)
