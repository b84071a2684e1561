"""forward auth rules: who may reach which site behind a reverse proxy

Revision ID: 9f4b2c7e1d60
Revises: 5d1e7a9c3b20
Create Date: 2026-12-06 15:15:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '9f4b2c7e1d60'
down_revision = '5d1e7a9c3b20'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'forward_auth_rules',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('host', sa.String(length=253), nullable=False),
        sa.Column('path_prefix', sa.String(length=512), nullable=False),
        sa.Column('groups', sa.JSON(), nullable=False),
        sa.Column('acr', sa.String(length=8), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_forward_auth_rules')),
        sa.UniqueConstraint('host', 'path_prefix', name=op.f('uq_forward_auth_rules_host')),
    )
    with op.batch_alter_table('forward_auth_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_forward_auth_rules_host'), ['host'], unique=False)


def downgrade():
    with op.batch_alter_table('forward_auth_rules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_forward_auth_rules_host'))
    op.drop_table('forward_auth_rules')
