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
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from mailgated.errors import MailgatedError

BUSY_TIMEOUT_MS = 30_000
STREAM_BLOB = 1024 * 1024  # a blob this big goes into SQLite by incremental blob I/O
IN_LIST_MAX = 900  # SQLite allows 999 parameters in one statement

T = TypeVar("T")


def chunks(items: list[T], size: int = IN_LIST_MAX) -> Iterator[list[T]]:
    """Slices small enough for an IN list on every engine."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def make_engine(url: str) -> Engine:
    """An engine for `url` with our SQLite pragmas, or a plain PostgreSQL engine."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _install_sqlite_pragmas(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(False))
    return create_engine(url, pool_pre_ping=True)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    if name.startswith("file:"):
        return Path(name[5:].partition("?")[0]).expanduser()
    return Path(name).expanduser()


def display_url(url: str) -> str:
    """The URL to show an operator: password hidden, a SQLite file as an absolute path."""
    parsed = make_url(url)
    file = sqlite_file(url)
    if file is not None:
        return f"sqlite:///{file.absolute()}"
    return str(parsed.render_as_string(hide_password=True))


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


def unavailable(exc: BaseException) -> bool:
    """Does `exc` say the database cannot be reached (down, restarting, file unreadable)?"""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


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

    def require_schema(self, create: bool = False) -> None:
        """Upgrade the schema to the current one; with `create`, make a new database too.

        Without `create` (every command but `init` and `run`), a database that does not
        exist yet is refused with one line: a command run from the wrong directory or
        with a mistyped path must not quietly start a second, empty system.
        """
        from mailgated import migrate

        file = sqlite_file(self.url)
        shown = display_url(self.url)
        if file is not None and not (file.exists() and file.stat().st_size > 0):
            if not create:
                raise MailgatedError(
                    f"no database at {shown}: create it with 'mailgated init'"
                    " (or give the right --config / [database] url)"
                )
            if not file.absolute().parent.is_dir():
                raise MailgatedError(
                    f"database.url: directory {file.absolute().parent} does not exist;"
                    " create it (or correct the path) and run 'mailgated init' again"
                )
        revision = migrate.current(self.engine)
        if revision == migrate.HEAD:
            return
        if revision is None:
            if "cases" in inspect(self.engine).get_table_names():
                raise MailgatedError("database has mailgated tables but no migration record")
            if not create:
                raise MailgatedError(
                    f"database {shown} has no mailgated tables: create them with 'mailgated init'"
                )
        migrate.check_installed()
        self.upgrade()
        reached = migrate.current(self.engine)
        if reached != migrate.HEAD:
            raise MailgatedError(
                f"database {shown} is at revision {reached}, not {migrate.HEAD}, after the"
                f" upgrade: the migrations in {migrate.MIGRATIONS / 'versions'} are incomplete;"
                " reinstall mailgated"
            )

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
