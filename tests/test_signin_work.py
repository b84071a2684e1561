"""What a password sign-in does, counted: each statement is one a sign-in needs (issue 16:
"count what a sign-in must do, and do no more"). Times are never asserted; work is."""

from __future__ import annotations

import pytest
from sqlalchemy import event
from test_ldap import ldap_settings

from conftest import PASSWORD, Browser, https_client
from identity.auth import provisioning
from identity.extensions import db


def _sign_in_statements(app, browser, username="alice", page="/login"):
    """The SQL statements of one POST /login (the page's GET is made before counting)."""
    token_page = browser.csrf(page)
    statements = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(" ".join(args[2].split()))  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        response = browser.post(
            "/login", {"username": username, "password": PASSWORD, "csrf_token": token_page}
        )
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return statements, response


def _touching(statements, table):
    return [s for s in statements if f" {table}" in s]


def test_a_local_sign_in_reads_the_account_s_links_once(app, browser, user):
    """Without a directory, the account's links do not decide any check: the link that
    signs in is read once, with its account."""
    statements, response = _sign_in_statements(app, browser)
    assert response.status_code == 302
    reads = [s for s in _touching(statements, "linked_identities") if s.startswith("SELECT")]
    assert len(reads) == 1, reads


def test_a_first_sign_in_in_a_browser_deletes_no_session(app, browser, user):
    """A browser that holds no session and no remember-me cookie has nothing to end."""
    statements, response = _sign_in_statements(app, browser)
    assert response.status_code == 302
    # (The sweep of expired sessions, once a minute per process, is not this sign-in's.)
    ended = [s for s in statements if s.startswith("DELETE") and "expires_at <" not in s]
    assert not ended, statements


def test_signing_in_again_over_a_session_still_ends_the_old_one(app, browser, user):
    """The cut above keeps the rule: a sign-in over a live session ends that session's row."""
    browser.login()
    statements, response = _sign_in_statements(app, browser, page="/login?reauth=1")
    assert response.status_code == 302
    assert [s for s in statements if s.startswith("DELETE FROM browser_sessions")], statements


def test_the_second_factors_are_asked_in_one_statement(app, browser, user):
    statements, response = _sign_in_statements(app, browser)
    assert response.status_code == 302
    asked = [s for s in statements if "totp_factors" in s or "passkeys" in s]
    assert len(asked) == 1, asked


def test_a_sign_in_commits_once(app, browser, user):
    token = browser.csrf("/login")
    commits = []
    with app.app_context():
        engine = db.engine
    listener = lambda conn: commits.append(conn)  # noqa: E731
    event.listen(engine, "commit", listener)
    try:
        form = {"username": "alice", "password": PASSWORD, "csrf_token": token}
        assert browser.post("/login", form).status_code == 302
    finally:
        event.remove(engine, "commit", listener)
    assert len(commits) == 1


class TestDirectorySignIn:
    """The same count for a directory account's second sign-in (the first created it)."""

    @pytest.fixture
    def app_overrides(self, directory):
        return ldap_settings(directory)

    def _statements(self, app, directory, *, before=None):
        first = Browser(https_client(app))
        first.login("ada", directory.passwords["ada"])
        if before:
            before()
        browser = Browser(https_client(app))
        token = browser.csrf("/login")
        statements = []
        with app.app_context():
            engine = db.engine
        listener = lambda *args: statements.append(" ".join(args[2].split()))  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            form = {"username": "ada", "password": directory.passwords["ada"], "csrf_token": token}
            response = browser.post("/login", form)
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        assert response.status_code == 302
        return statements

    def test_the_link_is_read_once(self, app, directory):
        """The link the directory's check found by its subject is the one that signs in."""
        reads = [
            s
            for s in self._statements(app, directory)
            if s.startswith("SELECT") and "FROM linked_identities" in s
        ]
        assert len(reads) == 1, reads

    def test_the_link_is_written_once(self, app, directory):
        """Checked now and used now: one UPDATE of the link's row, not one per column."""
        writes = [
            s for s in self._statements(app, directory) if s.startswith("UPDATE linked_identities")
        ]
        assert len(writes) == 1, writes

    @pytest.mark.parametrize("path", ["second sign-in", "lost the race", "sweep due"])
    def test_the_account_is_written_before_its_link(self, app, directory, monkeypatch, path):
        """One order in every transaction, the account's row first: two sign-ins of one person
        that lock the two rows in opposite orders deadlock on PostgreSQL (test_ldap_races).
        "lost the race": a first sign-in that saw no link, whose INSERT collided, goes on
        with the winner's account; "sweep due": this sign-in also sweeps expired sessions,
        a statement that flushes what is pending before it."""

        def lose_the_race():
            real, calls = provisioning.find_link, []

            def find_link(identity):
                calls.append(identity)
                return None if len(calls) == 1 else real(identity)

            monkeypatch.setattr(provisioning, "find_link", find_link)

        def sweep_due():
            app.extensions["idp.sweeps"].clear()

        before = {"lost the race": lose_the_race, "sweep due": sweep_due}.get(path)
        updates = [
            s.split()[1]
            for s in self._statements(app, directory, before=before)
            if s.startswith("UPDATE ") and s.split()[1] in ("users", "linked_identities")
        ]
        assert updates == ["users", "linked_identities"], updates
