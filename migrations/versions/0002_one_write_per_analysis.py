"""one tag write per analysis

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tag_changes", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_tag_change_analysis_action", ["analysis_id", "action"])


def downgrade() -> None:
    with op.batch_alter_table("tag_changes", schema=None) as batch_op:
        batch_op.drop_constraint("uq_tag_change_analysis_action", type_="unique")
