"""fold e-mail keys (NFKC, case-folded) as identity.names.fold does

Revision ID: 3f6a2d9c8b41
Revises: 7a1e5c3d9b20
Create Date: 2026-12-06 11:40:00.000000

"""

import logging
import unicodedata

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "3f6a2d9c8b41"
down_revision = "7a1e5c3d9b20"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

users = sa.table(
    "users",
    sa.column("id", sa.Integer),
    sa.column("email", sa.String),
    sa.column("email_key", sa.String),
)


def _fold(text: str) -> str:
    # identity.names.fold as of this revision, frozen here: a migration must not change
    # meaning when the application's code does.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold()).strip()


def _rekey(key_of) -> None:
    """Set every e-mail key to key_of(email), except where another account already has that
    key (two addresses that are one once folded): those are left as they were, and named."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(users.c.id, users.c.email, users.c.email_key).where(users.c.email.is_not(None))
    ).all()
    taken = {key for _, _, key in rows}
    for user_id, email, key in rows:
        wanted = key_of(email)
        if wanted == key:
            continue
        if wanted in taken:
            log.warning(
                "account %s keeps the e-mail key %r: %r is another account's address",
                user_id,
                key,
                wanted,
            )
            continue
        conn.execute(sa.update(users).where(users.c.id == user_id).values(email_key=wanted))
        taken.discard(key)
        taken.add(wanted)


def upgrade():
    _rekey(_fold)


def downgrade():
    _rekey(str.lower)
