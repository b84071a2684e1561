"""The tokens table is pruned: a row goes once it can no longer matter (access token expired,
refresh token expired or revoked, SSO session over, plus an hour), in bounded batches swept
whenever a row is written (the token endpoint, the revocation of an app's own token), like
authorization codes."""

from __future__ import annotations

import time

from oidc_rp import App, register
from sqlalchemy import select

from identity import sweeps
from identity.extensions import db
from identity.models import Token

HOUR, DAY = 3600, 86400


def row(name: str, *, age: int, refresh_left=None, used=False, revoked_ago=None, sid=None):
    """A token row issued `age` seconds ago (its access token lived 10 minutes)."""
    now = int(time.time())
    revoked = now - revoked_ago if revoked_ago is not None else 0
    return {
        "client_id": "x",
        "token_type": "Bearer",
        "access_token": name,
        "refresh_token": f"digest-{name}" if refresh_left is not None else None,
        "scope": "openid",
        "issued_at": now - age,
        "expires_in": 600,
        "access_token_revoked_at": revoked,
        "refresh_token_revoked_at": revoked,
        "refresh_token_expires_at": now + refresh_left if refresh_left is not None else None,
        "refresh_token_used_at": now - age + 60 if used else None,
        "grant_id": f"g-{name}",
        "sid": sid,
    }


ROWS = [
    # (row, kept?)
    (row("expired-long-ago", age=2 * HOUR), False),
    (row("expired-minutes-ago", age=30 * 60), True),  # within the hour kept after
    (row("refresh-still-valid", age=5 * DAY, refresh_left=25 * DAY), True),
    (row("refresh-spent-not-expired", age=5 * DAY, refresh_left=25 * DAY, used=True), True),
    (row("refresh-expired", age=31 * DAY, refresh_left=-DAY), False),
    (row("revoked-long-ago", age=5 * DAY, refresh_left=25 * DAY, revoked_ago=2 * HOUR), False),
    (row("revoked-just-now", age=5 * DAY, refresh_left=25 * DAY, revoked_ago=60), True),
    (row("session-may-live", age=2 * HOUR, sid="s1"), True),  # its sign-out still tells the app
    (row("session-over", age=DAY, sid="s2"), False),
]


def machine_token(idp, machine: App) -> None:
    """An app's own token, revoked: its row is written then (none is when it is issued),
    and the table swept."""
    response = machine.post("/token", {"grant_type": "client_credentials"})
    assert response.status_code == 200, response.text
    revoked = machine.post("/revoke", {"token": response.json()["access_token"]})
    assert revoked.status_code == 200, revoked.text


def remaining(idp) -> set[str]:
    with idp.app.app_context():
        return set(db.session.scalars(select(Token.access_token)))


def test_token_rows_go_once_they_can_no_longer_matter(idp):
    with idp.app.app_context():
        db.session.execute(Token.__table__.insert(), [r for r, _ in ROWS])
        db.session.commit()
    machine = App(idp, register(idp, "batch", redirect_uris=[], grant_types=["client_credentials"]))
    machine_token(idp, machine)
    left = remaining(idp)
    kept = {r["access_token"] for r, keep in ROWS if keep}
    assert kept <= left
    assert not ({r["access_token"] for r, keep in ROWS if not keep} & left)
    assert len(left - kept) == 1  # the machine token just revoked


def test_token_pruning_is_bounded_and_catches_up(idp, monkeypatch):
    monkeypatch.setattr(sweeps, "BATCH", 3)
    with idp.app.app_context():
        db.session.execute(
            Token.__table__.insert(), [row(f"old-{i}", age=2 * HOUR) for i in range(7)]
        )
        db.session.commit()
    machine = App(idp, register(idp, "batch", redirect_uris=[], grant_types=["client_credentials"]))
    machine_token(idp, machine)
    assert len([t for t in remaining(idp) if t.startswith("old-")]) == 4  # one batch of 3
    machine_token(idp, machine)  # a full batch: the next response sweeps again at once
    assert len([t for t in remaining(idp) if t.startswith("old-")]) == 1
    machine_token(idp, machine)
    assert [t for t in remaining(idp) if t.startswith("old-")] == []
    # Nothing left to catch up: the next sweep waits for its minute.
    with idp.app.app_context():
        db.session.execute(Token.__table__.insert(), [row("older", age=2 * HOUR)])
        db.session.commit()
    machine_token(idp, machine)
    assert "older" in remaining(idp)
