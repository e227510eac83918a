"""Every migration walks up and down on both engines, and the models match them."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from mailgated import migrate
from mailgated.db import Database
from mailgated.directory import SENDER_BY_EMAIL
from mailgated.models import Base


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_head_constant_matches_alembic() -> None:
    """migrate.HEAD names the newest Alembic revision."""
    assert migrate.head() == migrate.HEAD


# SQLite: batch mode recreating outbox reflects cases (its foreign key), whose expression
# index SQLAlchemy cannot reflect; cases itself is not recreated, so the index is kept
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_walk_every_migration_down_and_up(db: Database) -> None:
    """Every migration walks down to base and up again on both engines."""
    assert migrate.current(db.engine) == migrate.HEAD
    revs = revisions()
    for target in reversed(["base", *revs[:-1]]):
        db.downgrade(target)
        assert migrate.current(db.engine) == (None if target == "base" else target)
    assert [t for t in inspect(db.engine).get_table_names() if t != "alembic_version"] == []
    for target in revs:
        db.upgrade(target)
        assert migrate.current(db.engine) == target


# SQLite cannot reflect the expression index (ix_cases_report_month): said, and skipped
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_models_match_migrations(db: Database) -> None:
    """The models and the migrations describe the same schema."""
    with db.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": migrate.include_object}
            ),
            Base.metadata,
        )
    assert diff == []


def test_the_sender_of_a_new_case_is_found_through_an_index(db: Database) -> None:
    """The partner behind a sender's address is looked up through ix_partners_email_lower,
    not by reading every partner (with 20,000 partners that read per new case doubled the
    time to process a message)."""
    with db.engine.connect() as conn:
        compiled = SENDER_BY_EMAIL.compile(conn)
        values = compiled.construct_params({"address": "info@acme.example"})
        if conn.dialect.name == "sqlite":
            positional = tuple(values[name] for name in compiled.positiontup or ())
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional).all()
        else:  # a table this small is read whole unless that is made dear
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", values).all()
    plan = "\n".join(str(row[-1]) for row in rows)
    assert "ix_partners_email_lower" in plan, plan
