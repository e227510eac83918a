"""Shared fixtures: every database test runs on SQLite and, where reachable, PostgreSQL.

PostgreSQL comes from $MAILGATED_TEST_PG (a server URL such as
postgresql+psycopg://postgres@127.0.0.1:5432/test); the suite makes its own
fresh database there and drops it at the end. Without it those tests skip
with the reason — except under CI=true, where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mailgated.db import Database
from mailgated.models import Base

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> None:
    """Skip on a user's machine; fail under CI, where every server must be there."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is faster)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test session, or None when there is none."""
    base = os.environ.get("MAILGATED_TEST_PG")
    if not base:
        yield None
        return
    url = make_url(base)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    name = f"mailgated_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server down: tests that need it skip or fail
        admin.dispose()
        yield f"unreachable:{exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        return
    fresh = url.set(database=name).render_as_string(hide_password=False)
    db = Database(fresh)
    db.upgrade()
    db.dispose()
    yield fresh
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_pg(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


def engine_url(request: pytest.FixtureRequest, tmp: Path) -> str:
    """A migrated, empty database on the engine named by request.param ("sqlite" or
    "postgresql"); also used by module-scoped fixtures that set up their own params."""
    if request.param == "sqlite":
        target = tmp / "mailgated.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    pg = request.getfixturevalue("pg_server_url")
    if pg is None:
        missing(
            "PostgreSQL tests need MAILGATED_TEST_PG (e.g. postgresql://postgres@127.0.0.1/test)"
        )
    if pg.startswith("unreachable:"):
        missing(f"PostgreSQL at MAILGATED_TEST_PG is unreachable ({pg[12:]})")
    _truncate_pg(pg)
    return str(pg)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database URL on each engine."""
    return engine_url(request, tmp_path)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        import json

        return json.loads(self.out)


class MG:
    """Runs `mailgated ARGS…` in-process against one database and config."""

    def __init__(self, workdir: Path, db_url: str, config: Path | None = None) -> None:
        self.workdir = workdir
        self.db_url = db_url
        self.config = config

    def __call__(
        self, *args: str, as_user: str | None = None, ok: bool = True, stdin: bytes | None = None
    ) -> Result:
        from mailgated.cli import main

        argv: list[str] = []
        if self.config is not None:
            argv += ["--config", str(self.config)]
        if as_user:
            argv += ["--as", as_user]
        argv += list(args)
        out, err = io.StringIO(), io.StringIO()
        code = 0
        old_env = os.environ.get("MAILGATED_DATABASE_URL")
        old_cwd = os.getcwd()
        os.environ["MAILGATED_DATABASE_URL"] = self.db_url
        os.chdir(self.workdir)
        old_stdin = sys.stdin
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(argv)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdin = old_stdin
            os.chdir(old_cwd)
            if old_env is None:
                os.environ.pop("MAILGATED_DATABASE_URL", None)
            else:
                os.environ["MAILGATED_DATABASE_URL"] = old_env
        result = Result(code, out.getvalue(), err.getvalue())
        if ok and code != 0:
            raise AssertionError(f"mailgated {' '.join(args)} exited {code}: {result.err}")
        return result


@pytest.fixture
def mg(db_url: str, tmp_path: Path) -> MG:
    """The CLI, in-process, on this test's database (SQLite and PostgreSQL)."""
    return MG(tmp_path, db_url)


# Real servers for the intake tests (a throw-away Dovecot); the fixtures live in their own module.
from dovecot import dovecot  # noqa: E402, F401
