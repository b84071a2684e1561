"""Forward authentication for accounts linked to the directory, against the real slapd
(ldap_server.py): each check the proxy asks reads the person's entry again once the last
reading is older than IDP_LDAP_RECHECK_SECONDS, as the provider does (identity.oidc.recheck).
A leaver deleted or locked there stops reaching the protected sites at the next check, not at
the next `ldap sync` or sign-in; while the directory cannot tell, nobody passes on old data;
within the window the directory is not asked at all."""

from __future__ import annotations

import pytest
from sqlalchemy import event
from test_directory_leavers import (
    age_directory_check,
    delete_entry,
    lock_by_failed_binds,
    lock_entry,
    state,
)
from test_forward_auth import DOMAIN, IDP, add_rule, ask, fa_cookie, sign_in
from test_ldap import ldap_settings

from identity.extensions import db
from identity.forward_auth import views


@pytest.fixture
def app_overrides(directory, request) -> dict:
    window = getattr(request, "param", 0)
    return {
        **ldap_settings(directory),
        "ISSUER": IDP,
        "FORWARD_AUTH_COOKIE_DOMAIN": DOMAIN,
        "LDAP_RECHECK_SECONDS": window,
    }


def ada_at_the_site(app, directory, host="app.example.test", groups=()) -> str:
    """ada signs in with her directory password and gets the forward-auth cookie, which
    passes the rule for `host`."""
    add_rule(app, host, groups=groups)
    person = app.test_client()
    sign_in(person, "ada", directory.passwords["ada"])
    value = fa_cookie(person, f"https://{host}/")
    assert ask(app, value, host=host).status_code == 200
    return value


@pytest.mark.parametrize("leaves", [delete_entry, lock_entry], ids=["deleted", "locked"])
def test_a_leaver_is_refused_at_the_next_check_and_disabled(app, directory, leaves):
    value = ada_at_the_site(app, directory)
    leaves(directory, "ada")
    r = ask(app, value)
    assert r.status_code == 302 and "/forward-auth/login?" in r.headers["Location"]
    assert ask(app, value, nginx=True).status_code == 401
    after = state(app, "ada")
    assert after["disabled"]
    reason = "gone" if leaves is delete_entry else "locked"
    assert ("directory.account_disabled", reason) in after["events"]


def test_groups_follow_the_directory_at_the_next_check(app, directory):
    value = ada_at_the_site(app, directory, "eng.example.test", groups=["engineers"])
    directory.modify(directory.group_dn("engineers"), {"member": directory.dn("linus")})
    r = ask(app, value, host="eng.example.test")
    assert r.status_code == 403
    assert "engineers" not in state(app, "ada")["groups"]


def test_while_the_directory_is_down_nobody_passes_and_nothing_is_decided(app, directory):
    value = ada_at_the_site(app, directory)
    directory.stop()
    r = ask(app, value)
    assert r.status_code == 503
    assert views.DIRECTORY_DOWN in r.get_data(as_text=True)
    assert "Remote-User" not in r.headers
    assert ask(app, value, nginx=True).status_code == 503
    assert not state(app, "ada")["disabled"]
    directory.start()
    assert ask(app, value).status_code == 200


def test_a_lockout_by_failed_binds_sends_to_sign_in_and_disables_nothing(app, directory):
    value = ada_at_the_site(app, directory)
    lock_by_failed_binds(directory, "ada")
    r = ask(app, value)
    assert r.status_code == 302 and "/forward-auth/login?" in r.headers["Location"]
    assert not state(app, "ada")["disabled"]


@pytest.mark.parametrize("app_overrides", [300], indirect=True)
def test_within_the_window_the_directory_is_not_asked(app, directory):
    """The common path stays one query: a check within IDP_LDAP_RECHECK_SECONDS of the last
    reading does not reach the directory (counted by slapd itself)."""
    value = ada_at_the_site(app, directory)
    before = directory.operations()
    statements = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731 - the statement
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for _ in range(3):
            assert ask(app, value).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert directory.operations() == before
    # Two statements a check, as for a local account: the rule, and the account with its
    # session, its directory link and when that was last read.
    assert len(statements) == 2 * 3, statements
    assert sum("linked_identities" in s for s in statements) == 3
    delete_entry(directory, "ada")
    age_directory_check(app, "ada", 301)
    assert ask(app, value).status_code == 302
    assert state(app, "ada")["disabled"]
