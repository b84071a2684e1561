"""Expired rows go in bounded sweeps (identity/sweeps.py): signing in prunes sessions and
remember-me tokens past their lifetime a batch at a time, at most once a minute per table,
never with a scan of the whole table at every sign-in."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from identity import sweeps
from identity.extensions import db
from identity.models import BrowserSession, RememberToken


def add_expired(app, user_id: int, n: int, tag: str) -> None:
    long_ago = int(time.time()) - 86400
    with app.app_context():
        for i in range(n):
            db.session.add(
                BrowserSession(
                    sid=f"{tag}-{i}",
                    user_id=user_id,
                    started_at=long_ago - 60,
                    last_seen_at=long_ago - 60,
                    expires_at=long_ago,
                    auth_time=long_ago - 60,
                    connector="local",
                )
            )
            db.session.add(
                RememberToken(
                    series=f"{tag}-{i}",
                    token_hash="0" * 64,
                    user_id=user_id,
                    epoch="e",
                    auth_time=long_ago - 60,
                    amr=["pwd"],
                    connector="local",
                    created_at=long_ago - 60,
                    rotated_at=long_ago - 60,
                    expires_at=long_ago,
                )
            )
        db.session.commit()


def expired(app) -> tuple[int, int]:
    now = int(time.time())
    with app.app_context():
        return (
            db.session.scalar(select(func.count()).where(BrowserSession.expires_at < now)),
            db.session.scalar(select(func.count()).where(RememberToken.expires_at < now)),
        )


def test_sign_in_sweeps_expired_rows_a_batch_at_a_time_once_a_minute(
    app, user, browser, monkeypatch
):
    monkeypatch.setattr(sweeps, "BATCH", 3)
    add_expired(app, user.id, 5, "old")
    assert browser.login(remember="y").status_code == 302
    assert expired(app) == (2, 2)  # one batch of each, not the whole table
    browser.logout()
    assert browser.login(remember="y").status_code == 302  # a full batch: swept again
    assert expired(app) == (0, 0)
    add_expired(app, user.id, 1, "later")
    browser.logout()
    assert browser.login(remember="y").status_code == 302
    assert expired(app) == (1, 1)  # nothing to catch up: the next sweep waits its minute


def test_a_sweep_names_rows_by_their_key_whatever_its_name(app, user):
    add_expired(app, user.id, 2, "keys")
    with app.test_request_context():
        # BrowserSession's key is `sid` (text), RememberToken's `id` (a number).
        assert sweeps.sweep(BrowserSession, lambda: (BrowserSession.expires_at < time.time(),)) == 2
        assert sweeps.sweep(RememberToken, lambda: (RememberToken.expires_at < time.time(),)) == 2
        assert sweeps.sweep(BrowserSession, lambda: (BrowserSession.expires_at < time.time(),)) == 0
        db.session.commit()
