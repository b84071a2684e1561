"""directory rechecks: group DNs on accounts, last check on links

Revision ID: 7d1e3c2a9b40
Revises: 1cb1be28d083
Create Date: 2026-12-06 11:50:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7d1e3c2a9b40'
down_revision = '1cb1be28d083'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        # Existing accounts get an empty list (no admin by group until the next check), then
        # the default moves to the application.
        batch_op.add_column(sa.Column('group_dns', sa.JSON(), nullable=False,
                                      server_default=sa.text("'[]'")))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('group_dns', server_default=None)
    with op.batch_alter_table('linked_identities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checked_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('linked_identities', schema=None) as batch_op:
        batch_op.drop_column('checked_at')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('group_dns')
