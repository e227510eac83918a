"""Alembic, driven from code: `mailgated init` and the tests use these."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"

# The newest revision in migrations/versions (a test keeps it equal to Alembic's head).
# Known here so that every command can check the schema without importing Alembic.
HEAD = "0009"

# Indexes that autogenerate cannot compare: expression indexes, which SQLite cannot
# reflect. ix_cases_report_month is made on SQLite only (models.REPORT_MONTH_INDEX, and
# Alembic ignores its ddl_if), ix_partners_email_lower on every database
# (models.PARTNER_EMAIL_INDEX); comparing them would report false differences.
# tests/test_migrations.py checks that the migrations make them.
NOT_COMPARED = frozenset({"ix_cases_report_month", "ix_partners_email_lower"})


def check_installed() -> None:
    """Refuse to migrate when the migration scripts are missing (a broken package)."""
    from mailgated.errors import MailgatedError

    versions = MIGRATIONS / "versions"
    if not any(versions.glob("*.py")):
        raise MailgatedError(
            f"no database migrations in {versions}: this installation of mailgated is"
            " incomplete; reinstall it"
        )


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, other: object
) -> bool:
    """Alembic's include_object hook: everything but NOT_COMPARED."""
    return not (type_ == "index" and name in NOT_COMPARED)


def alembic_config(engine: Engine | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(engine: Engine) -> str | None:
    """The database's revision, read directly (cheap enough for every command)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
