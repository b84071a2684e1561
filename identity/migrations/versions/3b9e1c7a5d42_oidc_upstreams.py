"""oidc upstreams: upstream OpenID providers added in the admin console

Revision ID: 3b9e1c7a5d42
Revises: 9f4b2c7e1d60
Create Date: 2026-12-06 15:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '3b9e1c7a5d42'
down_revision = '9f4b2c7e1d60'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'oidc_upstreams',
        sa.Column('id', sa.String(length=27), nullable=False),
        sa.Column('issuer', sa.String(length=255), nullable=False),
        sa.Column('client_id', sa.String(length=255), nullable=False),
        sa.Column('client_secret', sa.Text(), nullable=False),
        sa.Column('label', sa.String(length=60), nullable=False),
        sa.Column('scopes', sa.String(length=500), nullable=False),
        sa.Column('username_claim', sa.String(length=100), nullable=False),
        sa.Column('groups_claim', sa.String(length=100), nullable=True),
        sa.Column('trust_email_verified', sa.Boolean(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade():
    op.drop_table('oidc_upstreams')
