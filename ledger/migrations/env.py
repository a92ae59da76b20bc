"""Alembic environment: always run on the connection the ledger hands over (ledger._db.upgrade)."""

from alembic import context
from sqlmodel import SQLModel

import ledger._models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `gemini-ledger db upgrade`, not alembic directly")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
