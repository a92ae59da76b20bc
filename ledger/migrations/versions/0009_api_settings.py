"""the API a pipeline's workers bind batch jobs at, for the webhook receiver to compare

``api_settings``: per pipeline, the Gemini API base URL (without credentials) and a digest
of the API key (never the key) as last recorded by a tick that bound a batch job. A webhook
receiver (and ``doctor``) whose own settings differ is refused at start: it would poll jobs
its API does not know.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_settings",
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("base_url", sa.String(length=512), nullable=False),
        sa.Column("key_digest", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline"),
    )


def downgrade() -> None:
    op.drop_table("api_settings")
