"""Real servers the fault tests control: a redis-server they can restart, a TCP proxy they can cut.

Only servers these tests start are ever stopped: the shared Redis and PostgreSQL are never touched
(PostgreSQL "going away" is the proxy in front of it refusing and dropping connections).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from typing import Any

import redis
from conftest import LocalCluster, PrivateRedis, _free_ports


class RestartableRedis(PrivateRedis):
    """A private redis-server (no persistence) that a test stops and starts again on the same port:
    what a Redis restart looks like to a client — every key gone, consumer groups included."""

    def restart(self) -> None:
        with contextlib.suppress(redis.RedisError):
            redis.Redis(port=self.port).shutdown(nosave=True)
        deadline = time.time() + 20
        while True:  # the port is free once the old server is gone
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                break
            if time.time() > deadline:
                raise RuntimeError("redis-server did not stop")
            time.sleep(0.05)
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "yes", "--dir", self.dir, "--logfile", f"{self.dir}/redis.log"],
            check=True,
        )
        LocalCluster._wait(lambda: redis.Redis(port=self.port).ping())


class TcpProxy:
    """A TCP proxy on a free loopback port in front of ``target``. ``down()`` stops accepting and cuts
    every open connection (the server "went away"); ``up()`` accepts again."""

    def __init__(self, target: tuple[str, int], up: bool = True) -> None:
        self.target = target
        (self.port,) = _free_ports(1)
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if up:
            self.up()

    def up(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    close = down

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def url(self, database_url: str) -> str:
        """``database_url`` pointed at this proxy instead of its host and port."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params: dict[str, Any] = conninfo_to_dict(database_url)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**params)
