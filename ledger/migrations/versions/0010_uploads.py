"""uploads: Files API files of prompts' media as ledger rows

``uploads``: one row per pipeline and content hash (sha256): its state (reserving, active,
deleted), the reservation token, the file's name, URI and expiry once bound, and its
deletion. ``upload_uses``: which job keys read it, so it is deleted when they are all final.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=True),
        sa.Column("reserved_at", sa.Float(), nullable=False),
        sa.Column("mime_type", sa.String(length=256), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("bound_at", sa.Float(), nullable=True),
        sa.Column("uploads", sa.Integer(), nullable=False),
        sa.Column("deleted_at", sa.Float(), nullable=True),
        sa.Column("delete_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pipeline", "content_hash"),
    )
    op.create_index("ix_uploads_pipeline_state", "uploads", ["pipeline", "state"])
    op.create_table(
        "upload_uses",
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("pipeline", "content_hash", "key"),
    )


def downgrade() -> None:
    op.drop_table("upload_uses")
    op.drop_index("ix_uploads_pipeline_state", table_name="uploads")
    op.drop_table("uploads")
