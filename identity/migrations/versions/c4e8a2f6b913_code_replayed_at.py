"""codes remember a replay, so that the request that spent one first cannot save live tokens

Revision ID: c4e8a2f6b913
Revises: 3b9e1c7a5d42
Create Date: 2026-12-06 18:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c4e8a2f6b913'
down_revision = '3b9e1c7a5d42'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('oauth_codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replayed_at', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('oauth_codes', schema=None) as batch_op:
        batch_op.drop_column('replayed_at')
