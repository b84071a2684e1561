"""Each flow walked end to end as an app would: Authlib's OAuth client against the provider
served over HTTPS on loopback, a person's browser signing in and consenting."""

from __future__ import annotations

import threading
import time

import pytest
from authlib.integrations.requests_client import OAuth2Session
from oidc_rp import CALLBACK, App, Person, logout_receiver, register, sign_in_and_allow

from conftest import PASSWORD


def test_code_flow_with_pkce_gives_verified_id_and_access_tokens(idp):
    app = App(idp, register(idp))
    person = Person(idp)
    response = sign_in_and_allow(person, app)
    params = app.callback_params(response)
    assert params["state"] == app.state
    assert params["iss"] == idp.url  # RFC 9207
    token = app.redeem(response)
    assert token["token_type"].lower() == "bearer" and token["expires_in"] == 600
    assert token["refresh_token"] and token["scope"] == "openid profile email"

    id_token = app.verify(token["id_token"])
    claims = id_token.claims
    assert id_token.header["kid"] in {k.kid for k in app.jwks()}
    assert claims["iss"] == idp.url and claims["aud"] == app.registered.client_id
    assert claims["nonce"] == app.nonce
    assert claims["amr"] == ["pwd"] and claims["sid"]
    assert claims["exp"] - claims["iat"] == 600
    assert abs(claims["auth_time"] - time.time()) < 30
    assert claims["at_hash"] and claims["email"] == "alice@example.org"
    assert claims["preferred_username"] == "alice"

    access = app.verify(token["access_token"])
    assert access.header["typ"] == "at+jwt"
    assert access.claims["sub"] == claims["sub"]
    assert access.claims["client_id"] == app.registered.client_id

    info = app.session.get(f"{idp.url}/userinfo", verify=idp.ca)
    assert info.status_code == 200
    assert info.json() == {
        "sub": claims["sub"],
        "preferred_username": "alice",
        "name": "Alice Liddell",
        "email": "alice@example.org",
        "email_verified": False,
    }


def test_refresh_rotates_and_reuse_revokes_the_whole_grant(idp):
    app = App(idp, register(idp))
    first = app.redeem(sign_in_and_allow(Person(idp), app))
    second = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    third = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
    )
    assert third.status_code == 200
    third = third.json()

    # The first refresh token again: someone holds a copy. Refused, and the grant ends.
    replay = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    latest = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": third["refresh_token"]}
    )
    assert latest.status_code == 400 and latest.json()["error"] == "invalid_grant"
    for token in (first, second, third):
        info = app.post("/introspect", {"token": token["access_token"]}).json()
        assert info == {"active": False}
        userinfo = app.session.get(
            f"{idp.url}/userinfo",
            headers={"Authorization": f"Bearer {token['access_token']}"},
            verify=idp.ca,
        )
        assert userinfo.status_code == 401


def test_a_code_redeemed_twice_fails_and_revokes_what_the_first_gave(idp):
    app = App(idp, register(idp))
    response = sign_in_and_allow(Person(idp), app)
    code = app.callback_params(response)["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "code_verifier": app.verifier,
    }
    first = app.post("/token", form)
    assert first.status_code == 200
    again = app.post("/token", form)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    tokens = first.json()
    assert app.post("/introspect", {"token": tokens["access_token"]}).json() == {"active": False}
    refresh = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refresh.status_code == 400


def test_public_app_needs_pkce_and_authenticates_with_nothing(idp):
    registered = register(idp, "spa", public=True)
    app = App(idp, registered)
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    assert app.verify(token["id_token"]).claims["aud"] == registered.client_id

    # Without a challenge: refused at the authorization request, back at the app.
    person = Person(idp)
    app2 = App(idp, registered)
    url = app2.authorization_url()
    plain = OAuth2Session(registered.client_id, scope="openid", redirect_uri=CALLBACK)
    url, _ = plain.create_authorization_url(f"{idp.url}/authorize")
    response = person.open(url)
    params = app2.callback_params(response)
    assert params["error"] == "invalid_request" and "PKCE" in params["error_description"]
    assert params["iss"] == idp.url


def test_client_credentials_grant(idp):
    registered = register(
        idp, "batch", redirect_uris=[], grant_types=["client_credentials"], scopes=["groups"]
    )
    app = App(idp, registered)
    response = app.post("/token", {"grant_type": "client_credentials"})
    assert response.status_code == 200, response.text
    token = response.json()
    assert "refresh_token" not in token and "id_token" not in token
    claims = app.verify(token["access_token"]).claims
    assert claims["sub"] == registered.client_id and claims["client_id"] == registered.client_id
    # client_secret_post works as well as Basic.
    posted = app.post(
        "/token",
        {
            "grant_type": "client_credentials",
            "client_id": registered.client_id,
            "client_secret": registered.secret,
        },
        auth=False,
    )
    assert posted.status_code == 200
    info = app.post("/introspect", {"token": token["access_token"]}).json()
    assert info["active"] is True and info["client_id"] == registered.client_id
    assert info["sub"] == registered.client_id and "username" not in info


def test_introspection_and_revocation(idp):
    app = App(idp, register(idp))
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    info = app.post("/introspect", {"token": token["access_token"]}).json()
    assert info["active"] is True and info["username"] == "alice"
    assert info["scope"] == "openid profile email" and info["token_type"] == "Bearer"
    refresh_info = app.post(
        "/introspect", {"token": token["refresh_token"], "token_type_hint": "refresh_token"}
    ).json()
    assert refresh_info["active"] is True and refresh_info["token_type"] == "refresh_token"

    # Another app learns nothing about this app's tokens, and cannot revoke them.
    other = App(idp, register(idp, "other"))
    assert other.post("/introspect", {"token": token["access_token"]}).json() == {"active": False}
    refused = other.post("/revoke", {"token": token["refresh_token"]})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert app.post("/introspect", {"token": token["access_token"]}).json()["active"] is True

    # Revoking the access token ends that token only.
    assert app.post("/revoke", {"token": token["access_token"]}).status_code == 200
    assert app.post("/introspect", {"token": token["access_token"]}).json() == {"active": False}
    gone = app.session.get(
        f"{idp.url}/userinfo",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        verify=idp.ca,
    )
    assert gone.status_code == 401 and "invalid_token" in gone.headers["WWW-Authenticate"]
    # Revoking the refresh token ends the grant.
    assert app.post("/revoke", {"token": token["refresh_token"]}).status_code == 200
    refreshed = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    )
    assert refreshed.status_code == 400
    # An unknown token: 200 and nothing to say (RFC 7009 2.2).
    assert app.post("/revoke", {"token": "nonsense"}).status_code == 200


def test_rp_initiated_logout_redirects_to_the_registered_uri_and_echoes_state(idp):
    registered = register(idp, post_logout_redirect_uris=["https://app.example/bye"])
    app = App(idp, registered)
    person = Person(idp)
    token = app.redeem(sign_in_and_allow(person, app))
    response = person.open(
        f"{idp.url}/end_session?id_token_hint={token['id_token']}"
        "&post_logout_redirect_uri=https://app.example/bye&state=s-123"
    )
    assert response.final == "https://app.example/bye?state=s-123"
    # Signed out: the next authorization asks for a sign-in again.
    again = person.open(App(idp, registered).authorization_url())
    assert "/login" in again.final
    # Its tokens were revoked with the session.
    assert app.post("/introspect", {"token": token["access_token"]}).json() == {"active": False}


def test_logout_to_an_unregistered_uri_stays_here(idp):
    app = App(idp, register(idp, post_logout_redirect_uris=["https://app.example/bye"]))
    person = Person(idp)
    token = app.redeem(sign_in_and_allow(person, app))
    response = person.open(
        f"{idp.url}/end_session?id_token_hint={token['id_token']}"
        "&post_logout_redirect_uri=https://evil.example/&state=x"
    )
    assert response.final.startswith(idp.url) and response.status_code == 200
    assert "You are signed out" in response.text


def test_logout_without_id_token_hint_asks_first(idp):
    app = App(idp, register(idp))
    person = Person(idp)
    sign_in_and_allow(person, app)
    page = person.open(f"{idp.url}/end_session")
    assert page.status_code == 200 and "Sign out?" in page.text
    # A cross-site POST without our form's token signs nobody out.
    forged = person.http.post(f"{idp.url}/end_session", data={"x": "1"}, verify=idp.ca)
    assert "Sign out?" in forged.text
    done = person.submit(page, {}, action="/end_session")
    assert "You are signed out" in done.text
    assert "/login" in person.open(App(idp, register(idp, "b")).authorization_url()).final


# Longer than the slow app holds its answer: were delivery in the request, sign-out would wait.
@pytest.mark.parametrize("idp_settings", [{"BACKCHANNEL_LOGOUT_TIMEOUT": 25}])
def test_back_channel_logout_reaches_every_app_of_the_session(idp):
    from identity.oidc.logout import LOGOUT_EVENT, wait_for_deliveries

    release = threading.Event()
    with logout_receiver() as one, logout_receiver(hold=release) as slow:
        a = App(idp, register(idp, "a", backchannel_logout_uri=one.url))
        b = App(idp, register(idp, "b", backchannel_logout_uri=slow.url))
        c = App(idp, register(idp, "c"))
        person = Person(idp)
        tokens = {}
        for app in (a, b, c):
            tokens[app.registered.name] = app.redeem(sign_in_and_allow(person, app))
        sid = a.verify(tokens["a"]["id_token"]).claims["sid"]
        assert all(a.verify(t["id_token"]).claims["sid"] == sid for t in tokens.values())

        account = person.open(f"{idp.url}/account")
        signed_out = person.submit(account, {}, action="/logout")
        # The person got their answer while the slow app still holds its logout request.
        assert not slow.answered.is_set()
        assert slow.arrived.wait(10)
        assert signed_out.status_code == 200 and "/login" in signed_out.final
        release.set()
        assert one.arrived.wait(10)
        wait_for_deliveries()
    jwks = a.jwks()
    for receiver, app in ((one, a), (slow, b)):
        (body,) = receiver.received
        token = app.verify(body["logout_token"], jwks)
        assert token.header["typ"] == "logout+jwt"
        claims = token.claims
        assert claims["aud"] == app.registered.client_id and claims["sid"] == sid
        assert claims["iss"] == idp.url and LOGOUT_EVENT in claims["events"]
        assert "nonce" not in claims and claims["jti"]
        assert claims["sub"] == a.verify(tokens["a"]["id_token"]).claims["sub"]


def test_a_password_change_ends_the_other_sessions_and_tells_their_apps(idp):
    from identity.oidc.logout import wait_for_deliveries

    with logout_receiver() as receiver:
        app = App(idp, register(idp, skip_consent=True, backchannel_logout_uri=receiver.url))
        laptop, phone = Person(idp), Person(idp)
        on_laptop = app.redeem(sign_in_and_allow(laptop, app))
        on_phone = app.redeem(sign_in_and_allow(phone, app))
        account = laptop.open(f"{idp.url}/account")
        new = "a brand new long passphrase"
        laptop.submit(
            account,
            {"current_password": PASSWORD, "password": new, "confirm": new},
            action="/account/password",
        )
        assert receiver.arrived.wait(10)
        wait_for_deliveries()
    (body,) = receiver.received
    logout_sid = app.verify(body["logout_token"]).claims["sid"]
    assert logout_sid == app.verify(on_phone["id_token"]).claims["sid"]
    assert app.post("/introspect", {"token": on_phone["access_token"]}).json() == {"active": False}
    # The laptop, where the password was changed, keeps its session and its app's tokens.
    assert app.post("/introspect", {"token": on_laptop["access_token"]}).json()["active"]
    assert "code" in app.callback_params(laptop.open(app.authorization_url()))
    assert "/login" in phone.open(app.authorization_url()).final
