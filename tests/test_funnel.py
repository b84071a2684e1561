"""The connector contract and the one sign-in funnel."""

from __future__ import annotations

import dataclasses

import pytest
from flask import session

from conftest import PASSWORD
from identity.auth.refusals import SignInRefused
from identity.auth.signin import sign_in
from identity.connectors import ConnectorError, Identity, PasswordConnector, RedirectConnector
from identity.connectors.local import LocalConnector
from identity.extensions import db
from identity.models import Event, LinkedIdentity, User


def test_identity_is_a_frozen_value():
    ident = Identity(connector="ldap", subject="u-1", username="ada", groups=("staff",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.subject = "other"  # type: ignore[misc]
    assert ident == Identity(connector="ldap", subject="u-1", username="ada", groups=("staff",))
    assert ident.email_verified is False and ident.amr == ("pwd",)


def test_local_connector_implements_the_protocol(app, user):
    conn = LocalConnector()
    assert isinstance(conn, PasswordConnector) and not isinstance(conn, RedirectConnector)
    with app.app_context():
        ident = conn.authenticate("alice", PASSWORD)
        assert ident == Identity(
            connector="local",
            subject=str(user.id),
            username="alice",
            email="Alice@Example.org",
            email_verified=False,
            name="Alice Liddell",
            amr=("pwd",),
        )
        assert conn.authenticate("alice", "wrong password!!") is None
        assert conn.authenticate("nobody", PASSWORD) is None


def test_sign_in_records_time_methods_and_session_id(app, user):
    ident = Identity(connector="local", subject=str(user.id), username="alice", amr=("pwd", "mfa"))
    with app.test_request_context("/"):
        session["leftover"] = "from before"
        signed = sign_in(ident, remember=False)
        assert signed.id == user.id
        assert "leftover" not in session
        assert session["amr"] == ["pwd", "mfa"] and session["connector"] == "local"
        assert isinstance(session["auth_time"], int) and session["sid"]
        link = db.session.query(LinkedIdentity).filter_by(user_id=user.id).one()
        assert link.last_used_at is not None
        assert db.session.get(User, user.id).last_login_at is not None


def test_unlinked_identity_is_refused_and_audited(app, user):
    ident = Identity(connector="google", subject="someone-else", username="alice")
    with app.test_request_context("/"):
        with pytest.raises(SignInRefused) as refused:
            sign_in(ident)
        assert refused.value.reason == "no_account"
        assert "_user_id" not in session
        event = db.session.query(Event).filter_by(type="signin.failure").one()
        assert event.data == {"method": "google", "reason": "no_account"}


def test_identity_from_another_connector_links_by_subject_not_by_name(app, user):
    """An identity is matched by (connector, subject) only: the same username elsewhere
    is not the same person."""
    with app.test_request_context("/"):
        with pytest.raises(SignInRefused):
            sign_in(
                Identity(
                    connector="google",
                    subject=str(user.id),
                    username="alice",
                    email="alice@example.org",
                    email_verified=True,
                )
            )


class DownConnector:
    id = "down"
    label = "Down"
    icon = None
    kind = "password"
    provisioning = "existing"

    def authenticate(self, username, password):
        raise ConnectorError("ldap://10.0.0.1: timed out")


class RecordingLocal(LocalConnector):
    calls = 0

    def check(self, user, password):
        type(self).calls += 1
        return super().check(user, password)


def test_connectors_are_tried_in_order_and_a_down_backend_is_not_a_wrong_password(
    app, browser, user, caplog
):
    from identity.connectors.registry import Registry

    registry = app.extensions["idp.connectors"] = Registry()
    registry.add(DownConnector())
    registry.add(RecordingLocal())
    # alice's account is local: her own password signs her in, the other connector unasked.
    assert browser.login().status_code == 302
    assert RecordingLocal.calls == 1
    browser.logout()
    # A name no account has goes to each connector in order: one of them could not answer.
    r = browser.login("nobody", "whatever password")
    assert RecordingLocal.calls == 2
    assert r.status_code == 503
    assert "try again in a few minutes" in r.get_data(as_text=True)
    assert "10.0.0.1" not in r.get_data(as_text=True)  # detail goes to the log only
    assert "connector down failed: ldap://10.0.0.1: timed out" in caplog.text
    with app.app_context():
        reasons = [
            e.data.get("reason") for e in db.session.query(Event).filter_by(type="signin.failure")
        ]
    assert reasons == ["backend_down"]


def directory_identity(**kw) -> Identity:
    values = dict(
        connector="ldap",
        subject="5f2b-uuid",
        username="Alice",
        email="alice@example.org",
        email_verified=True,
        name="Alice from LDAP",
        groups=("engineers",),
    )
    values.update(kw)
    return Identity(**values)


def test_directory_identity_gets_a_just_in_time_account_without_password(app, user):
    with app.test_request_context("/"):
        signed = sign_in(directory_identity())
        assert signed.id != user.id  # never joined to the local alice by name or e-mail
        assert signed.username == "alice-2"  # "alice" is taken locally
        assert signed.password_hash is None
        assert signed.email is None  # alice@example.org belongs to the local account
        assert signed.groups == ["engineers"] and signed.name == "Alice from LDAP"
        assert [(link.connector, link.subject) for link in signed.links] == [("ldap", "5f2b-uuid")]
        again = sign_in(directory_identity(name="Alice L.", groups=("ops", "staff")))
        assert again.id == signed.id
        assert again.name == "Alice L." and again.groups == ["ops", "staff"]
        assert db.session.query(User).count() == 2


def test_directory_email_is_refreshed_when_free(app):
    with app.test_request_context("/"):
        first = sign_in(directory_identity(email="old@example.org"))
        assert first.email == "old@example.org" and first.email_verified
        second = sign_in(directory_identity(email="New@Example.org"))
        assert second.email == "New@Example.org" and second.email_key == "new@example.org"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("O'Brien, Jr. (ops)*", "o-brien-jr.-ops"),
        ("ADA", "ada"),
        ("***", "user"),
        ("x" * 80, "x" * 56),
    ],
)
def test_local_usernames_from_directory_names(name, expected):
    from identity.auth.provisioning import local_username

    assert local_username(name) == expected


def test_an_address_taken_between_the_check_and_the_insert_is_not_a_server_error(
    app, user, monkeypatch
):
    # Another account took the address after provision() looked (a concurrent sign-up): the
    # INSERT collides, and the next attempt sees the address taken and leaves it out.
    from identity.auth import accounts, provisioning

    looked, real = [], accounts.email_taken

    def stale_once(email: str) -> bool:
        looked.append(email)
        return False if len(looked) == 1 else real(email)

    monkeypatch.setattr(provisioning.accounts, "email_taken", stale_once)
    ident = Identity(connector="ldap", subject="u-9", username="alice2", email="alice@example.org")
    with app.app_context():
        link = provisioning.provision(ident)
        assert link.user.email is None and link.user.username == "alice2"
        assert len(looked) == 2
        assert db.session.query(User).filter(User.email_key == "alice@example.org").count() == 1
