"""the answers' real usage and model version on each job

``jobs.thoughts_tokens``, ``jobs.cached_tokens``, ``jobs.audio_tokens``: thinking tokens,
context-cached prompt tokens and audio prompt tokens the answers reported
(``thoughtsTokenCount``, ``cachedContentTokenCount``, ``promptTokensDetails``), summed over
every attempt like the other token counts, so the cost estimate prices each at its own rate.

``jobs.model_version`` / ``jobs.response_id``: the ``modelVersion`` (an interaction's
``model``) and ``responseId`` of the last answer, so a result obtained through an alias such
as ``gemini-flash-latest`` says which model produced it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTS = ("thoughts_tokens", "cached_tokens", "audio_tokens")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for name in _COUNTS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("model_version", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("response_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("response_id")
        batch_op.drop_column("model_version")
        for name in reversed(_COUNTS):
            batch_op.drop_column(name)
