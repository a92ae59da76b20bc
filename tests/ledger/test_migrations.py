"""Schema migrations: a fresh ledger upgrades to exactly what the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from ledger import make_engine, upgrade
from ledger.testing import current_revision, head_revision


def test_migrations_match_the_models(unmigrated_ledger_url):
    """After `upgrade`, autogenerate finds no difference between the database and the models."""
    engine = make_engine(unmigrated_ledger_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_twice_is_a_no_op(unmigrated_sqlite_url):
    """Upgrading an up-to-date ledger changes nothing and does not fail."""
    engine = make_engine(unmigrated_sqlite_url)
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()
