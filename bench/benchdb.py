"""Database chores shared by the benchmarks: server statements, statistics, staff rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, create_engine, insert, text

from mailgated.db import Database
from mailgated.models import User


def on_server(pg_url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE) on a PostgreSQL server."""
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(statement))
    admin.dispose()


def analyze(db: Database, table: str = "") -> None:
    """Fresh planner statistics after a bulk load (VACUUM ANALYZE on PostgreSQL)."""
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    else:
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def insert_users(conn: Connection, n: int) -> None:
    """Staff u0 … u{n-1} (ids 1 … n on a fresh database)."""
    rows: list[dict[str, Any]] = [
        {"login": f"u{i}", "name": f"User {i}", "email": f"u{i}@example.com"} for i in range(n)
    ]
    conn.execute(insert(User), rows)
