"""Every rule of the provider, broken on purpose: the answer is the standard error, to the
app when its redirect URI is known, on a page here when it is not, and nothing is issued."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import RSAKey
from oidc_rp import (
    CALLBACK,
    App,
    Person,
    register,
    sign_in_and_allow,
)
from sqlalchemy import select

from conftest import PASSWORD
from identity.extensions import db
from identity.models import Consent
from identity.oidc import keys


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def token_request(app: App, response, **changes) -> requests.Response:
    form = {
        "grant_type": "authorization_code",
        "code": app.callback_params(response)["code"],
        "redirect_uri": CALLBACK,
        "code_verifier": getattr(app, "verifier", None),
        **changes,
    }
    return app.post("/token", {k: v for k, v in form.items() if v is not None})


# -- discovery ------------------------------------------------------------------------------


def test_discovery_states_exactly_what_is_supported(idp):
    body = requests.get(f"{idp.url}/.well-known/openid-configuration", verify=idp.ca).json()
    assert body["issuer"] == idp.url
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "introspection_endpoint",
        "revocation_endpoint",
        "end_session_endpoint",
    ):
        assert body[name].startswith(idp.url + "/")
        # Each one answers (GET on a POST-only endpoint: 405, not 404).
        status = requests.get(body[name], verify=idp.ca, allow_redirects=False).status_code
        assert status != 404, name
    assert body["response_types_supported"] == ["code"]
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert set(body["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "client_credentials",
    }
    assert set(body["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }
    assert body["id_token_signing_alg_values_supported"] == ["RS256", "ES256", "EdDSA"]
    assert {"openid", "profile", "email", "groups"} <= set(body["scopes_supported"])
    assert body["authorization_response_iss_parameter_supported"] is True
    assert body["backchannel_logout_supported"] is True


# -- the authorization request ----------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"client_id": "no-such-app"}, "client"),
        ({"redirect_uri": "https://evil.example/callback"}, "redirect"),
        ({"redirect_uri": CALLBACK + "/"}, "redirect"),
        ({"redirect_uri": CALLBACK + "?x=1"}, "redirect"),
        ({"redirect_uri": "https://APP.example/callback"}, "redirect"),
    ],
)
def test_unknown_app_or_redirect_uri_gets_a_page_never_a_redirect(idp, change, message):
    app = App(idp, register(idp))
    url = app.authorization_url()
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(change)
    response = Person(idp).open(f"{idp.url}/authorize?{urlencode(query)}")
    assert response.status_code == 400 and response.final.startswith(idp.url)
    assert "This sign-in request is not valid" in response.text
    assert message in response.text.lower()


def test_errors_with_a_known_redirect_uri_go_back_to_the_app_with_state_and_iss(idp):
    app = App(idp, register(idp))
    url = app.authorization_url().replace("scope=openid", "scope=openid+admin")
    response = Person(idp).open(url)
    params = app.callback_params(response)
    assert params["error"] == "invalid_scope"
    assert params["state"] == app.state and params["iss"] == idp.url
    # response_type other than code.
    url = app.authorization_url().replace("response_type=code", "response_type=token")
    params = app.callback_params(Person(idp).open(url))
    assert params["error"] == "unsupported_response_type"


def test_plain_pkce_is_refused(idp):
    app = App(idp, register(idp))
    url = app.authorization_url().replace(
        "code_challenge_method=S256", "code_challenge_method=plain"
    )
    params = app.callback_params(Person(idp).open(url))
    assert params["error"] == "invalid_request"
    url = app.authorization_url().replace("&code_challenge_method=S256", "")
    params = app.callback_params(Person(idp).open(url))
    assert params["error"] == "invalid_request" and "S256" in params["error_description"]


def test_denied_consent_tells_the_app_access_denied(idp):
    app = App(idp, register(idp))
    person = Person(idp)
    page = person.sign_in(person.open(app.authorization_url()))
    assert "Allow notes to sign you in?" in page.text
    response = person.submit(page, {"decision": "deny"})
    params = app.callback_params(response)
    assert params["error"] == "access_denied" and params["iss"] == idp.url


# -- the token request ----------------------------------------------------------------------


def test_pkce_verifier_missing_or_wrong_fails_and_spends_the_code(idp):
    app = App(idp, register(idp))
    response = sign_in_and_allow(Person(idp), app)
    missing = token_request(app, response, code_verifier=None)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"

    response = sign_in_and_allow(Person(idp), app)
    wrong = token_request(app, response, code_verifier="x" * 50)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    again = token_request(app, response)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_no_pkce_downgrade_a_verifier_without_a_challenge_is_refused(idp):
    registered = register(idp)
    person = Person(idp)
    sign_in_and_allow(person, App(idp, registered))  # consent given
    plain = OAuth2Session(registered.client_id, scope="openid", redirect_uri=CALLBACK)
    url, _ = plain.create_authorization_url(f"{idp.url}/authorize")
    response = person.open(url)
    app = App(idp, registered)
    app.verifier = "v" * 50
    refused = token_request(app, response)  # sends a code_verifier nobody asked for
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"


def test_wrong_redirect_uri_at_the_token_endpoint(idp):
    app = App(idp, register(idp, redirect_uris=[CALLBACK, "https://app.example/other"]))
    response = sign_in_and_allow(Person(idp), app)
    wrong = token_request(app, response, redirect_uri="https://app.example/other")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_a_code_belongs_to_the_app_it_was_given_to(idp):
    app = App(idp, register(idp))
    other = App(idp, register(idp, "other"))
    response = sign_in_and_allow(Person(idp), app)
    stolen = token_request(other, response, code_verifier=app.verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert token_request(app, response).status_code == 200


def test_expired_code(idp):
    app = App(idp, register(idp))
    response = sign_in_and_allow(Person(idp), app)
    with idp.app.app_context():
        from identity.models import AuthorizationCode

        for row in db.session.scalars(select(AuthorizationCode)):
            row.expires_at = int(time.time()) - 1
        db.session.commit()
    late = token_request(app, response)
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"


def test_bad_client_credentials_get_401_with_www_authenticate(idp):
    registered = register(idp)
    for auth in ((registered.client_id, "wrong"), ("nobody", "x")):
        response = requests.post(
            f"{idp.url}/token",
            data={"grant_type": "client_credentials"},
            auth=auth,
            verify=idp.ca,
        )
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    nothing = requests.post(
        f"{idp.url}/token", data={"grant_type": "client_credentials"}, verify=idp.ca
    )
    assert nothing.status_code in (400, 401) and nothing.json()["error"] == "invalid_client"


def test_a_grant_the_app_was_not_registered_for(idp):
    app = App(idp, register(idp))  # authorization_code + refresh_token
    response = app.post("/token", {"grant_type": "client_credentials"})
    assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"
    unknown = app.post("/token", {"grant_type": "password", "username": "a", "password": "b"})
    assert unknown.status_code == 400 and unknown.json()["error"] == "unsupported_grant_type"
    public = App(idp, register(idp, "spa", public=True))
    cc = public.post("/token", {"grant_type": "client_credentials"})
    assert cc.status_code in (400, 401) and cc.json()["error"] in (
        "unauthorized_client",
        "invalid_client",
    )


def test_refresh_token_of_another_app_is_refused_and_stays_usable(idp):
    app = App(idp, register(idp))
    other = App(idp, register(idp, "other"))
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    stolen = other.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    )
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    mine = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    )
    assert mine.status_code == 200


def test_refresh_cannot_widen_scope(idp):
    app = App(idp, register(idp, scopes=["openid", "profile", "email", "groups"]))
    token = app.redeem(sign_in_and_allow(Person(idp), app))  # openid profile email
    wider = app.post(
        "/token",
        {
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "scope": "openid groups",
        },
    )
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


# -- tokens the provider must not accept ------------------------------------------------------


def hs256(header: dict, claims: dict, secret: bytes) -> str:
    """Signed by hand: joserfc rightly refuses a public key as an HMAC secret."""
    signing_input = f"{b64(header)}.{b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def forged_tokens(app: App, real: str) -> dict[str, str]:
    header, payload, signature = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    kid = json.loads(base64.urlsafe_b64decode(header + "=="))["kid"]
    rsa_public = next(k for k in app.jwks() if k.kid == kid)
    tampered = dict(claims, scope="openid profile email groups")
    stranger = RSAKey.generate_key(2048, parameters={"kid": "unknown-kid"})
    same_kid = RSAKey.generate_key(2048, parameters={"kid": kid})
    return {
        "alg none": f"{b64({'alg': 'none', 'typ': 'at+jwt'})}.{payload}.",
        "HS256 with the public key as secret": hs256(
            {"alg": "HS256", "kid": kid, "typ": "at+jwt"},
            claims,
            rsa_public.as_pem(private=False),
        ),
        "unknown kid": jwt.encode({"alg": "RS256", "typ": "at+jwt"}, claims, stranger),
        "known kid, other key": jwt.encode(
            {"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, same_kid
        ),
        "tampered payload": f"{header}.{b64(tampered)}.{signature}",
    }


def test_forged_access_tokens_are_refused_everywhere(idp):
    app = App(idp, register(idp))
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    for name, forged in forged_tokens(app, token["access_token"]).items():
        info = requests.get(
            f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {forged}"}, verify=idp.ca
        )
        assert info.status_code == 401, name
        assert 'error="invalid_token"' in info.headers["WWW-Authenticate"], name
        assert app.post("/introspect", {"token": forged}).json() == {"active": False}, name
    # The real one works, so the refusals above are about the forgery.
    ok = requests.get(
        f"{idp.url}/userinfo",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        verify=idp.ca,
    )
    assert ok.status_code == 200


def test_forged_id_token_hints_are_refused(idp):
    registered = register(idp, post_logout_redirect_uris=["https://app.example/bye"])
    app = App(idp, registered)
    person = Person(idp)
    token = app.redeem(sign_in_and_allow(person, app))
    for name, forged in forged_tokens(app, token["id_token"]).items():
        response = person.open(
            f"{idp.url}/end_session?id_token_hint={forged}"
            "&post_logout_redirect_uri=https://app.example/bye"
        )
        assert response.status_code == 400, name
        assert response.final.startswith(idp.url), name
        params = app.callback_params(person.open(app.authorization_url(id_token_hint=forged)))
        assert params["error"] == "invalid_request", name
    # Still signed in: no forged hint ended the session.
    assert "code" in app.callback_params(person.open(app.authorization_url()))


def test_missing_or_malformed_bearer_token(idp):
    none = requests.get(f"{idp.url}/userinfo", verify=idp.ca)
    assert none.status_code == 401 and none.headers["WWW-Authenticate"] == "Bearer"
    assert none.json()["error"] == "invalid_request"
    for value in ("Bearer", "Bearer a.b.c", "Bearer ....", "Basic abc", "Bearer " + "x" * 5000):
        response = requests.get(
            f"{idp.url}/userinfo", headers={"Authorization": value}, verify=idp.ca
        )
        assert response.status_code in (400, 401), value
        assert response.headers["Content-Type"].startswith("application/json"), value


def test_client_credentials_token_has_no_userinfo(idp):
    registered = register(
        idp, "batch", redirect_uris=[], grant_types=["client_credentials"], scopes=["openid"]
    )
    app = App(idp, registered)
    token = app.post("/token", {"grant_type": "client_credentials", "scope": "openid"}).json()
    assert token["scope"] == "openid"
    response = requests.get(
        f"{idp.url}/userinfo",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        verify=idp.ca,
    )
    assert response.status_code == 401


@pytest.mark.parametrize("idp_settings", [{"ACCESS_TOKEN_LIFETIME": 1}])
def test_expired_access_token(idp):
    app = App(idp, register(idp))
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    time.sleep(2.1)
    response = requests.get(
        f"{idp.url}/userinfo",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        verify=idp.ca,
    )
    assert response.status_code == 401
    assert app.post("/introspect", {"token": token["access_token"]}).json() == {"active": False}
    with pytest.raises(Exception, match="expired"):
        app.verify(token["access_token"]).claims and jwt.JWTClaimsRegistry().validate(
            app.verify(token["access_token"]).claims
        )


# -- sessions: prompt, max_age, hints -------------------------------------------------------


def test_prompt_none_without_a_session_is_login_required(idp):
    app = App(idp, register(idp))
    params = app.callback_params(Person(idp).open(app.authorization_url(prompt="none")))
    assert params["error"] == "login_required" and params["state"] == app.state


def test_prompt_none_without_consent_is_consent_required(idp):
    app = App(idp, register(idp))
    person = Person(idp)
    person.sign_in(person.open(f"{idp.url}/login"))
    params = app.callback_params(person.open(app.authorization_url(prompt="none")))
    assert params["error"] == "consent_required"


def test_sso_second_app_and_prompt_none_need_no_page(idp):
    first = App(idp, register(idp, "first"))
    second = App(idp, register(idp, "second", skip_consent=True))
    person = Person(idp)
    sign_in_and_allow(person, first)
    # First-party app: no consent page, no sign-in page.
    response = person.open(second.authorization_url())
    assert "code" in second.callback_params(response)
    # Consent remembered: no page either, and prompt=none works.
    response = person.open(first.authorization_url(prompt="none"))
    assert "code" in first.callback_params(response)


def test_prompt_login_and_max_age_force_a_fresh_sign_in(idp):
    app = App(idp, register(idp, skip_consent=True))
    person = Person(idp)
    first = app.redeem(sign_in_and_allow(person, app))
    auth_time = app.verify(first["id_token"]).claims["auth_time"]
    time.sleep(1.1)
    for extra in ({"prompt": "login"}, {"max_age": "0"}):
        page = person.open(app.authorization_url(**extra))
        assert "/login" in page.final and page.status_code == 200, extra
        response = person.sign_in(page)
        token = app.redeem(response)
        assert app.verify(token["id_token"]).claims["auth_time"] > auth_time
    # max_age that the session satisfies: straight through.
    response = person.open(app.authorization_url(max_age="3600"))
    assert "code" in app.callback_params(response)
    bad = person.open(app.authorization_url(max_age="soon"))
    assert app.callback_params(bad)["error"] == "invalid_request"


def test_login_hint_fills_in_the_username(idp):
    app = App(idp, register(idp))
    page = Person(idp).open(app.authorization_url(login_hint="alice"))
    assert 'value="alice"' in page.text


def test_id_token_hint_for_someone_else_asks_to_sign_in(idp):
    from identity.auth import accounts

    with idp.app.app_context():
        accounts.create_local("bob", "bob@example.org", "another long password here", name="Bob")
    app = App(idp, register(idp, skip_consent=True))
    bob = Person(idp)
    page = bob.open(app.authorization_url())
    bobs = app.redeem(
        bob.submit(page, {"username": "bob", "password": "another long password here"})
    )
    alice = Person(idp)
    sign_in_and_allow(alice, app)
    response = alice.open(app.authorization_url(id_token_hint=bobs["id_token"], prompt="none"))
    assert app.callback_params(response)["error"] == "login_required"
    page = alice.open(app.authorization_url(id_token_hint=bobs["id_token"]))
    assert "/login" in page.final
    # Hint for the signed-in person: straight through.
    alices = app.redeem(alice.open(app.authorization_url()))
    response = alice.open(app.authorization_url(id_token_hint=alices["id_token"], prompt="none"))
    assert "code" in app.callback_params(response)


def test_id_token_hint_of_another_app_is_refused(idp):
    a = App(idp, register(idp, "a"))
    b = App(idp, register(idp, "b"))
    person = Person(idp)
    token = a.redeem(sign_in_and_allow(person, a))
    sign_in_and_allow(person, b)
    response = person.open(b.authorization_url(id_token_hint=token["id_token"]))
    assert b.callback_params(response)["error"] == "invalid_request"


# -- consent ------------------------------------------------------------------------------------


def test_consent_is_remembered_asked_for_new_scopes_and_revocable(idp):
    registered = register(idp, scopes=["openid", "profile", "email", "groups"])
    person = Person(idp)
    app = App(idp, registered, scope="openid profile")
    token = app.redeem(sign_in_and_allow(person, app))
    # Same scopes: no page.
    assert "code" in app.callback_params(person.open(app.authorization_url()))
    # More scopes: asked again, naming them.
    wider = App(idp, registered, scope="openid profile groups")
    page = person.open(wider.authorization_url())
    assert "The groups you belong to" in page.text
    person.submit(page, {"decision": "allow"})
    with idp.app.app_context():
        (consent,) = db.session.scalars(select(Consent)).all()
        assert set(consent.scope.split()) == {"openid", "profile", "groups"}
    # prompt=consent asks even when remembered.
    page = person.open(app.authorization_url(prompt="consent"))
    assert "Allow notes" in page.text

    account = person.open(f"{idp.url}/account")
    assert "Apps with access" in account.text and "notes" in account.text
    person.submit(account, {}, action="/revoke")
    with idp.app.app_context():
        assert db.session.scalars(select(Consent)).all() == []
    # Its tokens are revoked, and the next visit asks again.
    assert app.post("/introspect", {"token": token["access_token"]}).json() == {"active": False}
    page = person.open(app.authorization_url())
    assert "Allow notes" in page.text


def test_consent_form_needs_its_csrf_token(idp):
    app = App(idp, register(idp))
    person = Person(idp)
    page = person.sign_in(person.open(app.authorization_url()))
    forged = person.http.post(
        page.final, data={"decision": "allow"}, verify=idp.ca, allow_redirects=False
    )
    assert forged.status_code == 400 and "Location" not in forged.headers


def test_revoking_an_app_you_never_allowed(idp):
    person = Person(idp)
    person.sign_in(person.open(f"{idp.url}/login"))
    account = person.open(f"{idp.url}/account")
    from oidc_rp import page_form

    token = page_form(account.text, "/logout")["fields"]["csrf_token"]
    response = person.http.post(
        f"{idp.url}/account/apps/nope/revoke",
        data={"csrf_token": token},
        headers={"Referer": account.final},
        verify=idp.ca,
    )
    assert response.status_code == 404 and "no access" in response.text


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_id_tokens_signed_with_the_app_s_algorithm(idp, alg):
    app = App(idp, register(idp, id_token_alg=alg))
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    id_token = app.verify(token["id_token"], algorithms=[alg])
    assert id_token.header["alg"] == alg
    # The access token stays RS256.
    assert app.verify(token["access_token"]).header["alg"] == "RS256"


def test_rotation_does_not_break_an_app_that_cached_the_jwks(idp):
    app = App(idp, register(idp, skip_consent=True))
    person = Person(idp)
    cached = app.jwks()  # the app fetched the JWKS before the rotation
    before = app.redeem(sign_in_and_allow(person, app))
    with idp.app.app_context():
        keys.rotate()
    after = app.redeem(person.open(app.authorization_url()))
    assert (
        app.verify(after["id_token"], cached).header["kid"]
        != app.verify(before["id_token"], cached).header["kid"]
    )
    # Tokens signed before the rotation still verify with the fresh JWKS, and still work.
    app.verify(before["id_token"])
    ok = requests.get(
        f"{idp.url}/userinfo",
        headers={"Authorization": f"Bearer {before['access_token']}"},
        verify=idp.ca,
    )
    assert ok.status_code == 200


def test_a_first_party_app_is_listed_and_can_be_cut_off(idp):
    app = App(idp, register(idp, "Portal", skip_consent=True))
    person = Person(idp)
    token = app.redeem(sign_in_and_allow(person, app))
    account = person.open(f"{idp.url}/account")
    assert "Portal" in account.text and "e-mail, name" in account.text
    person.submit(account, {}, action="/revoke")
    assert app.post("/introspect", {"token": token["access_token"]}).json() == {"active": False}
    refreshed = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    )
    assert refreshed.status_code == 400
    assert "Portal" not in person.open(f"{idp.url}/account").text


def test_disabling_an_account_revokes_its_tokens(idp):
    app = App(idp, register(idp))
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    result = idp.app.test_cli_runner().invoke(args=["user", "disable", "alice"])
    assert result.exit_code == 0 and "its tokens revoked" in result.output
    assert app.post("/introspect", {"token": token["access_token"]}).json() == {"active": False}
    refreshed = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_a_session_restored_by_remember_me_is_an_sso_session_with_its_own_sid(idp):
    app = App(idp, register(idp, skip_consent=True))
    person = Person(idp)
    page = person.open(app.authorization_url())
    first = app.redeem(
        person.submit(page, {"username": "alice", "password": PASSWORD, "remember": "y"})
    )
    first_sid = app.verify(first["id_token"]).claims["sid"]
    # The browser restarts: the session cookie is gone, the remember-me cookie stays.
    for cookie in list(person.http.cookies):
        if cookie.name == "__Host-session":
            person.http.cookies.clear(cookie.domain, cookie.path, cookie.name)
    assert "__Host-remember" in {c.name for c in person.http.cookies}
    again = app.redeem(person.open(app.authorization_url()))
    claims = app.verify(again["id_token"]).claims
    assert claims["sid"] and claims["sid"] != first_sid
    assert claims["sub"] == app.verify(first["id_token"]).claims["sub"]


def test_codes_expired_for_an_hour_are_deleted(idp):
    from identity.models import AuthorizationCode

    app = App(idp, register(idp, skip_consent=True))
    person = Person(idp)
    sign_in_and_allow(person, app)
    with idp.app.app_context():
        (old,) = db.session.scalars(select(AuthorizationCode)).all()
        old.expires_at = int(time.time()) - 3601
        db.session.commit()
    person.open(app.authorization_url())
    with idp.app.app_context():
        # Swept once a minute per process: the first authorization above started the minute.
        assert len(db.session.scalars(select(AuthorizationCode)).all()) == 2
    idp.app.extensions["idp.sweeps"]["oauth_codes"] = 0.0
    person.open(app.authorization_url())
    with idp.app.app_context():
        rows = db.session.scalars(select(AuthorizationCode)).all()
        assert len(rows) == 2 and all(r.expires_at > time.time() for r in rows)


@pytest.mark.parametrize("idp_settings", [{"SIGNING_ALGORITHMS": ["ES256"]}])
def test_without_rs256_everything_is_signed_with_the_first_algorithm(idp):
    with idp.app.app_context():
        from identity.models import Client

        app = App(idp, register(idp, id_token_alg="ES256"))
        # An app registered for an algorithm the provider no longer signs with.
        legacy = register(idp, "legacy", id_token_alg="ES256")
        row = db.session.scalar(select(Client).where(Client.client_id == legacy.client_id))
        row.set_client_metadata({**row.client_metadata, "id_token_signed_response_alg": "RS256"})
        db.session.commit()
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    assert app.verify(token["access_token"], algorithms=["ES256"]).header["alg"] == "ES256"
    old = App(idp, legacy)
    token = old.redeem(sign_in_and_allow(Person(idp), old))
    assert old.verify(token["id_token"], algorithms=["ES256"]).header["alg"] == "ES256"


def test_a_scope_taken_from_the_app_is_not_refreshed(idp):
    from identity.oidc import clients as registry

    registered = register(idp, scopes=["openid", "profile", "email", "groups"])
    app = App(idp, registered, scope="openid profile groups")
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    assert "groups" in token["scope"].split()
    with idp.app.app_context():
        registry.update(registry.find(registered.client_id), scopes=["openid", "profile"])
    refreshed = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["scope"].split() == ["openid", "profile"]
    assert app.verify(refreshed.json()["access_token"]).claims["scope"] == "openid profile"


def test_logout_with_someone_else_s_id_token_hint_asks_first(idp):
    from identity.auth import accounts

    with idp.app.app_context():
        accounts.create_local("bob", "bob@example.org", "another long password here", name="Bob")
    registered = register(
        idp, skip_consent=True, post_logout_redirect_uris=["https://app.example/bye"]
    )
    app = App(idp, registered)
    bob = Person(idp)
    page = bob.open(app.authorization_url())
    bobs = app.redeem(
        bob.submit(page, {"username": "bob", "password": "another long password here"})
    )
    alice = Person(idp)
    sign_in_and_allow(alice, app)
    url = (
        f"{idp.url}/end_session?id_token_hint={bobs['id_token']}"
        "&post_logout_redirect_uri=https://app.example/bye&state=s"
    )
    page = alice.open(url)
    assert page.status_code == 200 and "Sign out?" in page.text
    assert "code" in app.callback_params(alice.open(app.authorization_url()))  # still signed in
    done = alice.submit(alice.open(url), {}, action="/end_session")
    assert done.final == "https://app.example/bye?state=s"
    assert "/login" in alice.open(app.authorization_url()).final
