"""Engine and sessions; SQLite made as durable as PostgreSQL.

SQLite runs in WAL mode with synchronous=FULL: processing deletes a spooled
message once its transaction commits, so a commit must survive a power cut.
Foreign keys are switched on (SQLite leaves them off) and a busy timeout lets
the daemon and a CLI command share the file. Write transactions start with
BEGIN IMMEDIATE so two writers queue on the lock instead of deadlocking.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from mailgated.errors import MailgatedError

BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    """An engine for `url` with our SQLite pragmas, or a plain PostgreSQL engine."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _install_sqlite_pragmas(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(False))
    return create_engine(url, pool_pre_ping=True)


def _install_sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self.sessions() as session, session.begin():
            yield session

    def upgrade(self, revision: str = "head") -> None:
        from mailgated import migrate

        migrate.upgrade(self.engine, revision)

    def downgrade(self, revision: str) -> None:
        from mailgated import migrate

        migrate.downgrade(self.engine, revision)

    def require_schema(self) -> None:
        """Create or upgrade the schema so commands work on a fresh machine."""
        from mailgated import migrate

        revision = migrate.current(self.engine)
        if revision == migrate.HEAD:
            return
        if revision is None and "cases" in inspect(self.engine).get_table_names():
            raise MailgatedError("database has mailgated tables but no migration record")
        self.upgrade()

    def dispose(self) -> None:
        self.engine.dispose()


def write_blob(
    connection: Connection, table: str, column: str, rowid: int, data: bytes, chunk: int = 1 << 20
) -> None:
    """Fill a SQLite blob inserted as zeroblob(len(data)) in place, a chunk at a time
    (incremental blob I/O): binding a large value makes SQLite hold two more copies."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    view = memoryview(data)
    with driver.blobopen(table, column, rowid) as blob:
        for start in range(0, len(view), chunk):
            blob.write(view[start : start + chunk])
