"""plans: what each night of a pipeline planned to spend, and the rows its budget paid for

``plans``: one row per pipeline and night (a tick's day): the rows its ticks reserved with
their estimated tokens and cost, the rows the budget held back, the cap and when it was
reached. ``jobs.plan_day``: the night whose budget paid for a row's last reservation, so
the night's actual spend is read from its rows' recorded usage.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("usd", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("cap_usd", sa.Float(), nullable=True),
        sa.Column("reached_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline", "day"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("plan_day", sa.String(length=10), nullable=True))
    op.create_index(
        "ix_jobs_plan_day",
        "jobs",
        ["pipeline", "plan_day"],
        sqlite_where=sa.text("plan_day IS NOT NULL"),
        postgresql_where=sa.text("plan_day IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_plan_day", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("plan_day")
    op.drop_table("plans")
