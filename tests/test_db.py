"""The embedded SQLite database is as durable as the spool expects."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from mailgated.db import Database
from mailgated.models import Case


def test_sqlite_pragmas(tmp_path: Path) -> None:
    """SQLite runs in WAL mode with synchronous=FULL, foreign keys on and a busy timeout."""
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000
    db.dispose()


def test_foreign_keys_are_enforced(db: Database) -> None:
    """A row naming a missing parent is refused on every engine."""
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(Case(subject="orphan", section_id=424242))
