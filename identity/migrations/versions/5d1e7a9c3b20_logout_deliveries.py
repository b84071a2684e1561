"""logout deliveries: back-channel logouts kept until delivered

Revision ID: 5d1e7a9c3b20
Revises: 8c4d2e6f1a93
Create Date: 2026-12-06 13:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5d1e7a9c3b20'
down_revision = '8c4d2e6f1a93'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'oidc_logout_deliveries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=48), nullable=False),
        sa.Column('subject', sa.String(length=64), nullable=False),
        sa.Column('sid', sa.String(length=64), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.Integer(), nullable=False),
        sa.Column('claimed_until', sa.Integer(), nullable=False),
        sa.Column('expires_at', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('oidc_logout_deliveries', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_oidc_logout_deliveries_client_id'), ['client_id'], unique=False
        )
        batch_op.create_index(
            batch_op.f('ix_oidc_logout_deliveries_next_attempt_at'),
            ['next_attempt_at'],
            unique=False,
        )


def downgrade():
    with op.batch_alter_table('oidc_logout_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oidc_logout_deliveries_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_oidc_logout_deliveries_client_id'))
    op.drop_table('oidc_logout_deliveries')
