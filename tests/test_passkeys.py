"""Passkeys without a browser: the options the server hands out (RP ID, discoverable key,
user verification), challenges that answer once, names, rename and removal of one's own
passkeys only, and how passkeys sit with the other factors (second step, TOTP removal, admin
reset and unlink). The ceremonies themselves: tests/test_passkeys_browser.py."""

from __future__ import annotations

import base64
import json
import time

import pytest
from soft_passkey import SoftPasskey
from sqlalchemy import select
from test_mfa import age_session

from conftest import PASSWORD
from identity.auth import accounts, mfa
from identity.auth.passkey_views import NAME_HELP, ONLY_WAY
from identity.auth.passkeys import STALE
from identity.extensions import db
from identity.models import LinkedIdentity, Passkey, User


@pytest.fixture
def verified(app, user):
    """alice, with her address verified (an unproven address may add no way to sign in)."""
    with app.app_context():
        accounts.find("alice").email_verified = True
        db.session.commit()
    return user


def passkey_for(app, username: str, name: str = "Laptop") -> int:
    """A stored passkey (and its sign-in link) for `username`, as registration leaves it."""
    with app.app_context():
        owner = accounts.find(username)
        row = Passkey(
            user_id=owner.id,
            credential_id=base64.urlsafe_b64encode(name.encode() * 4).decode().rstrip("="),
            public_key=b"not a key",
            sign_count=0,
            name=name,
        )
        db.session.add(row)
        if not db.session.scalar(
            select(LinkedIdentity).where(
                LinkedIdentity.user_id == owner.id, LinkedIdentity.connector == "passkey"
            )
        ):
            db.session.add(
                LinkedIdentity(user_id=owner.id, connector="passkey", subject=owner.subject)
            )
        db.session.commit()
        return row.id


def post_json(browser, path: str, body, page: str = "/login", **kw):
    token = browser.csrf(page)
    return browser.client.post(
        path,
        data=body if isinstance(body, str) else json.dumps(body),
        headers={
            "X-CSRFToken": token,
            "Referer": f"https://localhost{page}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
        **kw,
    )


def passkey_signin(browser, key: SoftPasskey, *, ip: str = "127.0.0.1", forged: bool = False):
    """A passwordless sign-in with `key` from the address `ip` (`forged`: a wrong signature)."""
    env = {"environ_base": {"REMOTE_ADDR": ip}}
    options = post_json(browser, "/login/passkey/options", {}, **env).get_json()
    answer = key.answer(options, "https://idp.test", forged=forged)
    return post_json(browser, "/login/passkey", {"credential": answer}, **env)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_registration_options_bind_the_issuer_host_and_a_discoverable_verified_key(
    app, browser, verified
):
    browser.login()
    passkey_for(app, "alice", "Old key")
    r = post_json(browser, "/account/passkeys/options", {}, page="/account")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    options = r.get_json()
    assert options["rp"]["id"] == "idp.test"
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    with app.app_context():
        alice = accounts.find("alice")
        assert options["user"]["id"] == b64url(alice.subject.encode())
        known = db.session.scalar(select(Passkey.credential_id))
    # The same authenticator is not registered twice.
    assert [c["id"] for c in options["excludeCredentials"]] == [known]


def test_an_unproven_address_adds_no_passkey(browser, user):
    browser.login()
    r = post_json(browser, "/account/passkeys/options", {}, page="/account")
    assert r.status_code == 403
    assert "Verify your e-mail address" in r.get_json()["error_description"]


def test_signin_options_require_user_verification_and_name_nobody(client, browser):
    r = post_json(browser, "/login/passkey/options", {})
    options = r.get_json()
    assert options["userVerification"] == "required"
    assert options["rpId"] == "idp.test"
    assert options.get("allowCredentials", []) == []


def test_an_answer_without_its_challenge_is_refused_in_json(browser):
    r = post_json(browser, "/login/passkey", {"credential": {"id": "AAAA"}})
    assert r.status_code == 400
    assert r.get_json() == {"error": "passkey_refused", "error_description": STALE}


def test_a_challenge_answers_once(browser):
    post_json(browser, "/login/passkey/options", {})
    first = post_json(browser, "/login/passkey", {"credential": {"id": "AAAA"}})
    assert first.status_code == 400 and first.get_json()["error_description"] != STALE
    again = post_json(browser, "/login/passkey", {"credential": {"id": "AAAA"}})
    assert again.get_json()["error_description"] == STALE


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\x00here", 7])
def test_a_passkey_needs_a_sensible_name(browser, verified, name):
    browser.login()
    post_json(browser, "/account/passkeys/options", {}, page="/account")
    r = post_json(browser, "/account/passkeys", {"name": name, "credential": {}}, "/account")
    assert r.status_code == 400 and r.get_json()["error_description"] == NAME_HELP


def test_rename_and_remove_touch_only_ones_own_passkeys(app, browser, verified):
    with app.app_context():
        accounts.create_local("bob", "bob@example.org", PASSWORD)
    bobs = passkey_for(app, "bob", "Bob's key")
    browser.login()
    assert (
        browser.post(
            f"/account/passkeys/{bobs}/rename", {"name": "mine"}, token_from="/account"
        ).status_code
        == 404
    )
    assert (
        browser.post(
            f"/account/passkeys/{bobs}/remove", {"proof": PASSWORD}, token_from="/account"
        ).status_code
        == 404
    )
    with app.app_context():
        assert db.session.get(Passkey, bobs).name == "Bob's key"


def test_rename_keeps_a_clean_name(app, browser, verified):
    browser.login()
    mine = passkey_for(app, "alice")
    r = browser.post(
        f"/account/passkeys/{mine}/rename",
        {"name": "  Work   phone "},
        token_from="/account",
        follow_redirects=True,
    )
    assert "is now called “Work phone”" in r.get_data(as_text=True)
    r = browser.post(
        f"/account/passkeys/{mine}/rename",
        {"name": ""},
        token_from="/account",
        follow_redirects=True,
    )
    assert NAME_HELP in r.get_data(as_text=True).replace("&#34;", '"')
    with app.app_context():
        assert db.session.get(Passkey, mine).name == "Work phone"


def test_removing_a_passkey_asks_for_the_password_and_the_last_takes_its_link(
    app, browser, verified
):
    browser.login()
    age_session(browser)
    first = passkey_for(app, "alice", "One")
    second = passkey_for(app, "alice", "Two")
    r = browser.post(
        f"/account/passkeys/{first}/remove", {"proof": "wrong password"}, token_from="/account"
    )
    assert r.status_code == 303
    with app.app_context():
        assert db.session.get(Passkey, first) is not None
    for pid in (first, second):
        r = browser.post(
            f"/account/passkeys/{pid}/remove", {"proof": PASSWORD}, token_from="/account"
        )
        assert r.status_code == 303
    with app.app_context():
        alice = accounts.find("alice")
        assert db.session.scalars(select(Passkey)).all() == []
        assert [link.connector for link in alice.links] == ["local"]


def test_a_passkey_is_the_second_factor_after_a_password(app, browser, verified):
    passkey_for(app, "alice")
    r = browser.login()
    assert r.headers["Location"].endswith("/login/second-factor")
    page = browser.get("/login/second-factor").get_data(as_text=True)
    assert "Use a passkey" in page and 'src="/static/passkeys.js"' in page
    assert browser.get("/account").status_code == 302  # no session before it


def test_the_only_way_to_sign_in_is_not_removed(app, browser, verified):
    browser.login()
    mine = passkey_for(app, "alice")
    with app.app_context():
        alice = accounts.find("alice")
        db.session.delete(next(link for link in alice.links if link.connector == "local"))
        db.session.commit()
    r = browser.post(
        f"/account/passkeys/{mine}/remove",
        {"proof": PASSWORD},
        token_from="/account",
        follow_redirects=True,
    )
    assert ONLY_WAY in r.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Passkey, mine) is not None


def test_removing_the_authenticator_app_keeps_the_passkeys_and_recovery_codes(
    app, browser, verified
):
    from test_mfa import enrol_from_account

    browser.login()
    enrol_from_account(browser)
    passkey_for(app, "alice")
    r = browser.post("/account/two-factor/remove", {"proof": PASSWORD}, token_from="/account")
    assert r.status_code == 303
    with app.app_context():
        alice = accounts.find("alice")
        assert mfa.factors(alice) == ["passkey"]
        assert mfa.recovery_codes_left(alice) == 10


def test_an_admin_reset_removes_the_passkeys_and_their_link(app, verified):
    from identity.admin import accounts as admin_accounts

    passkey_for(app, "alice")
    with app.app_context():
        alice = accounts.find("alice")
        admin_accounts.reset_mfa(alice)
        assert mfa.factors(alice) == []
        assert db.session.scalars(select(Passkey)).all() == []
        assert [link.connector for link in User.find("alice").links] == ["local"]


def test_an_admin_unlinking_passkey_sign_in_removes_the_passkeys(app, verified):
    from identity.admin import accounts as admin_accounts

    passkey_for(app, "alice")
    with app.app_context():
        alice = accounts.find("alice")
        link = next(link for link in alice.links if link.connector == "passkey")
        admin_accounts.unlink(alice, link)
        assert db.session.scalars(select(Passkey)).all() == []


@pytest.mark.parametrize("app_overrides", [{"PASSWORD_CHECK_RATE_LIMIT": "3/minute"}])
def test_passkey_challenges_count_with_the_password_checks_of_an_address(browser):
    for _ in range(3):
        assert post_json(browser, "/login/passkey/options", {}).status_code == 200
    refused = post_json(browser, "/login/passkey/options", {})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Too many" in refused.get_json()["error_description"]


def test_a_software_passkey_signs_in_without_a_password(app, browser, verified):
    key = SoftPasskey()
    key.store(app, "alice")
    r = passkey_signin(browser, key)
    assert r.status_code == 200, r.get_json()
    assert browser.get("/account").status_code == 200


LOCKOUT = {"LOCKOUT_ACCOUNT_FAILURES": 3, "LOCKOUT_DURATION": 2, "LOCKOUT_IP_FAILURES": 50}


@pytest.mark.parametrize("app_overrides", [LOCKOUT])
def test_forged_passkey_answers_from_rotating_addresses_lock_the_account_for_a_while(
    app, browser, verified
):
    """Each address stays far below its own limit; the account's lockout counts them all,
    as it counts wrong passwords. The lock is temporary: the owner's passkey signs in once
    it ends, and a success in between is never counted."""
    from identity.models import Event

    key = SoftPasskey()
    key.store(app, "alice")
    for n in range(2):
        r = passkey_signin(browser, key, ip=f"198.51.100.{n + 1}", forged=True)
        assert r.status_code == 401
    # The owner, meanwhile: signs in, and gives its place in the window back.
    assert passkey_signin(browser, key, ip="192.0.2.1").status_code == 200
    browser.logout()
    r = passkey_signin(browser, key, ip="198.51.100.3", forged=True)
    assert r.status_code == 401
    # Three forged answers from three addresses: the account is locked, from anywhere, for
    # the right passkey too (a lock refuses before checking, like a right password's) and for
    # its password.
    locked = passkey_signin(browser, key, ip="203.0.113.9")
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts" in locked.get_json()["error_description"]
    wait = int(locked.headers["Retry-After"])
    assert wait > 0
    assert browser.login().status_code == 429
    with app.app_context():
        reasons = [
            e.data.get("reason")
            for e in db.session.scalars(
                select(Event).where(Event.type == "signin.locked").order_by(Event.id)
            )
        ]
    assert reasons == ["account_failures"]
    # The lock ends by itself: the owner is not kept out for good by someone else's failures.
    time.sleep(wait + 0.5)
    assert passkey_signin(browser, key, ip="203.0.113.9").status_code == 200


@pytest.mark.parametrize("app_overrides", [LOCKOUT])
def test_a_forged_second_factor_passkey_counts_toward_the_lockout(app, browser, verified):
    key = SoftPasskey()
    key.store(app, "alice")
    for _ in range(3):
        assert browser.login().headers["Location"].endswith("/login/second-factor")
        options = post_json(browser, "/login/second-factor/passkey/options", {}).get_json()
        answer = key.answer(options, "https://idp.test", forged=True)
        r = post_json(browser, "/login/second-factor/passkey", {"credential": answer})
        assert r.status_code == 401
    assert browser.login().status_code == 429


# -- confirming a removal with whatever factor the account has ------------------------------


def social_only(app, username: str = "alice") -> None:
    """`username` signs in with GitHub (and passkeys) only: no password, no authenticator."""
    with app.app_context():
        owner = accounts.find(username)
        db.session.delete(next(link for link in owner.links if link.connector == "local"))
        owner.password_hash = None
        db.session.add(LinkedIdentity(user_id=owner.id, connector="github", subject="gh-1"))
        db.session.commit()


def confirm_removal(browser, key: SoftPasskey, passkey_id: int, *, verified: bool = True):
    """Remove passkey `passkey_id`, confirmed by `key` on the account page."""
    options = post_json(browser, "/account/passkeys/confirm/options", {}, "/account").get_json()
    answer = key.answer(options, "https://idp.test", verified=verified)
    return post_json(
        browser,
        f"/account/passkeys/{passkey_id}/remove/passkey",
        {"credential": answer},
        "/account",
    )


def kept(app) -> set[int]:
    with app.app_context():
        return set(db.session.scalars(select(Passkey.id)))


def ways_in(app) -> list[str]:
    with app.app_context():
        return sorted(link.connector for link in accounts.find("alice").links)


def flashed(browser, path: str, data: dict | None = None) -> str:
    return browser.post(path, data or {}, token_from="/account", follow_redirects=True).get_data(
        as_text=True
    )


def test_password_and_passkey_removal_confirms_with_any_factor(app, browser, verified):
    from test_mfa import enrolled, now_code

    one, two, three = SoftPasskey(), SoftPasskey(), SoftPasskey()
    ids = [
        key.store(app, "alice", name) for key, name in ((one, "One"), (two, "Two"), (three, "3"))
    ]
    assert passkey_signin(browser, one).status_code == 200
    age_session(browser)
    page = browser.get("/account").get_data(as_text=True)
    assert "Your password" in page and "Or confirm with a passkey and remove" in page
    # Neither nothing nor a wrong password, nor a passkey without user verification.
    assert "Enter your password" in flashed(browser, f"/account/passkeys/{ids[0]}/remove")
    flashed(browser, f"/account/passkeys/{ids[0]}/remove", {"proof": "not my password"})
    refused = confirm_removal(browser, two, ids[0], verified=False)
    assert refused.status_code == 401 and kept(app) == set(ids)
    # Another passkey, verified, confirms.
    assert confirm_removal(browser, two, ids[0]).get_json() == {"redirect": "/account#passkeys"}
    assert kept(app) == set(ids[1:])
    # So does a code of the authenticator app, when the account has one.
    secret, _ = enrolled(app)
    flashed(browser, f"/account/passkeys/{ids[1]}/remove", {"proof": now_code(secret, 1)})
    assert kept(app) == {ids[2]}
    # And a sign-in of the last few minutes, with nothing more asked.
    browser.logout()
    assert passkey_signin(browser, three).status_code == 200
    page = browser.get("/account").get_data(as_text=True)
    assert "nothing more is asked" in page and f'id="passkey-proof-{ids[2]}"' not in page
    assert "is removed" in flashed(browser, f"/account/passkeys/{ids[2]}/remove")
    assert kept(app) == set() and ways_in(app) == ["local"]


def test_social_and_one_passkey_confirms_with_that_passkey(app, browser, verified):
    from identity.auth.mfa_views import NO_PROOF

    social_only(app)
    key = SoftPasskey()
    mine = key.store(app, "alice")
    assert passkey_signin(browser, key).status_code == 200
    age_session(browser)
    page = browser.get("/account").get_data(as_text=True)
    # Nothing to type that the account does not have: a passkey, or a new sign-in.
    assert f'id="passkey-proof-{mine}"' not in page
    assert "Confirm with a passkey and remove" in page
    assert NO_PROOF in flashed(browser, f"/account/passkeys/{mine}/remove", {"proof": "123456"})
    assert kept(app) == {mine}
    assert confirm_removal(browser, key, mine).status_code == 200
    assert kept(app) == set() and ways_in(app) == ["github"]


def test_a_restored_session_is_no_fresh_sign_in(app, browser, verified):
    from identity.auth.mfa_views import NO_PROOF

    social_only(app)
    key = SoftPasskey()
    mine = key.store(app, "alice")
    options = post_json(browser, "/login/passkey/options", {}).get_json()
    answer = key.answer(options, "https://idp.test")
    signed_in = post_json(browser, "/login/passkey", {"credential": answer, "remember": True})
    assert signed_in.status_code == 200
    browser.client.delete_cookie("__Host-session")  # the browser restarts
    assert browser.get("/account").status_code == 200  # restored by the remember-me cookie
    assert NO_PROOF in flashed(browser, f"/account/passkeys/{mine}/remove")
    assert kept(app) == {mine}


def test_social_and_two_passkeys_each_confirms_the_other(app, browser, verified):
    social_only(app)
    one, two = SoftPasskey(), SoftPasskey()
    first, second = one.store(app, "alice", "One"), two.store(app, "alice", "Two")
    assert passkey_signin(browser, one).status_code == 200
    age_session(browser)
    assert confirm_removal(browser, two, first).status_code == 200
    assert kept(app) == {second}
    # The one used to sign in, a minute ago: nothing more is asked.
    browser.logout()
    assert passkey_signin(browser, two).status_code == 200
    assert "is removed" in flashed(browser, f"/account/passkeys/{second}/remove")
    assert kept(app) == set() and ways_in(app) == ["github"]


def test_the_last_way_in_is_never_removed_whatever_the_proof(app, browser, verified):
    with app.app_context():
        alice = accounts.find("alice")
        db.session.delete(next(link for link in alice.links if link.connector == "local"))
        alice.password_hash = None
        db.session.commit()
    one, two = SoftPasskey(), SoftPasskey()
    first, second = one.store(app, "alice", "One"), two.store(app, "alice", "Two")
    assert passkey_signin(browser, one).status_code == 200
    assert confirm_removal(browser, two, first).status_code == 200
    assert ONLY_WAY in flashed(browser, f"/account/passkeys/{second}/remove")
    refused = confirm_removal(browser, two, second)
    assert refused.status_code == 409 and refused.get_json()["error_description"] == ONLY_WAY
    assert kept(app) == {second} and ways_in(app) == ["passkey"]


def test_social_and_passkey_make_new_recovery_codes_after_a_fresh_sign_in(app, browser, verified):
    from test_mfa import CODES_RE

    from identity.auth.mfa_views import NO_PROOF

    social_only(app)
    key = SoftPasskey()
    key.store(app, "alice")
    assert passkey_signin(browser, key).status_code == 200
    page = browser.get("/account").get_data(as_text=True)
    assert 'id="proof-codes"' not in page and "nothing more is asked" in page
    r = browser.post("/account/recovery-codes", {}, token_from="/account")
    assert len(CODES_RE.findall(r.get_data(as_text=True))) == 10
    age_session(browser)
    page = browser.get("/account").get_data(as_text=True)
    assert 'id="proof-codes"' not in page and "To confirm, sign in again" in page
    assert NO_PROOF in flashed(browser, "/account/recovery-codes")
