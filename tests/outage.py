"""A database that goes away and comes back, on either engine, for outage tests.

PostgreSQL is reached through a small TCP proxy that this helper can cut
(every connection dropped, new ones refused) and restore; SQLite lives in a
folder of its own that is moved away (the pool emptied first), so opening the
file fails just as a vanished disk would.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
from pathlib import Path

from sqlalchemy.engine import make_url

from mailgated.db import Database


class TcpProxy:
    """127.0.0.1:<port> → the real server, until `cut()`; `restore()` listens again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            sockets, self._open = self._open, []
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._server is not server:
                    client.close()
                    upstream.close()
                    return
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class FlakyDatabase:
    """A copy of the test database at `url` that can be made unreachable and back."""

    def __init__(self, db_url: str, tmp: Path) -> None:
        parsed = make_url(db_url)
        self.proxy: TcpProxy | None = None
        if parsed.get_backend_name() == "sqlite":
            assert parsed.database
            self.folder = tmp / "database"
            self.folder.mkdir()
            shutil.copy(parsed.database, self.folder / "mailgated.db")
            self.url = f"sqlite:///{self.folder / 'mailgated.db'}"
        else:
            self.proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
            self.url = parsed.set(host="127.0.0.1", port=self.proxy.port).render_as_string(
                hide_password=False
            )
        self.db = Database(self.url)

    def cut(self) -> None:
        """From now on, connecting fails and open connections break."""
        if self.proxy is not None:
            self.proxy.cut()
        else:
            self.db.dispose()
            self.folder.rename(self.folder.with_name("database.away"))

    def restore(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        else:
            self.folder.with_name("database.away").rename(self.folder)
