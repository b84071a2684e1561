"""The OAuth 2.0 provider emulator (tests/provider_emulator.py) behaves like Google,
Facebook and X over real HTTPS: full code flows, PKCE, single-use codes, client
authentication, and the knobs that make a provider deny, fail or hang."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from provider_emulator import (
    DEFAULT_PROFILES,
    GOOGLE_SCOPES,
    PROVIDERS,
    ProviderEmulator,
    pkce_pair,
)
from requests_oauthlib import OAuth2Session

CALLBACK = "https://localhost/login/{}/authorized"
SCOPES = {
    "google": list(GOOGLE_SCOPES),
    "facebook": ["email", "public_profile"],
    "twitter": ["users.read", "tweet.read", "users.email", "offline.access"],
    "github": ["read:user", "user:email"],
}


def callback(provider: str) -> str:
    return CALLBACK.format(provider)


def query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def authorize_url(emu: ProviderEmulator, provider: str, **params: str | None) -> str:
    """An authorization URL as a client would build it (X with PKCE unless overridden)."""
    values: dict[str, str | None] = {
        "client_id": emu.clients[provider][0],
        "response_type": "code",
        "redirect_uri": callback(provider),
        "state": "st-123",
        "scope": " ".join(SCOPES[provider]),
    }
    values.update(params)
    sent = {k: v for k, v in values.items() if v is not None}
    return f"{emu.endpoints(provider)['authorization_url']}?{urlencode(sent)}"


def get_code(emu: ProviderEmulator, provider: str, **params: str | None) -> str:
    location = emu.approve(authorize_url(emu, provider, **params))
    assert location.startswith(callback(provider) + "?")
    answer = query(location)
    assert answer["state"] == params.get("state", "st-123")
    return answer["code"]


def token_request(
    emu: ProviderEmulator,
    provider: str,
    code: str,
    *,
    auth: str | tuple[str, str] | None = "basic",
    timeout: float = 10,
    **form: str | None,
) -> requests.Response:
    """POST a token request. auth: "basic" (the right credentials as HTTP Basic), "body"
    (client_id and client_secret in the form), a (client_id, secret) for Basic, or None.
    `form` overrides the form's fields; None leaves one out."""
    client_id, secret = emu.clients[provider]
    data: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": callback(provider),
    }
    if auth == "basic":
        auth = (client_id, secret)
    elif auth == "body":
        auth = None
        data.update(client_id=client_id, client_secret=secret)
    data.update(form)
    return requests.post(
        emu.endpoints(provider)["token_url"],
        data={k: v for k, v in data.items() if v is not None},
        auth=auth,
        verify=emu.ca_file,
        timeout=timeout,
    )


def profile_get(emu: ProviderEmulator, provider: str, token: str | None, **params: str):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(
        emu.profile_url(provider), params=params, headers=headers, verify=emu.ca_file, timeout=10
    )


# -- full flows -----------------------------------------------------------------------


def test_google_code_flow_with_oauth2session(emulator):
    ep = emulator.endpoints("google")
    client_id, secret = emulator.clients["google"]
    assert ep["api_base_url"].endswith("/google/")
    with OAuth2Session(client_id, redirect_uri=callback("google"), scope=SCOPES["google"]) as s:
        url, state = s.authorization_url(ep["authorization_url"], access_type="online")
        location = emulator.approve(url)
        assert query(location)["state"] == state
        token = s.fetch_token(
            ep["token_url"],
            authorization_response=location,
            client_secret=secret,
            verify=emulator.ca_file,
            timeout=10,
        )
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] == 3600
        assert token["scope"] == SCOPES["google"]
        assert "refresh_token" not in token
        me = s.get(ep["api_base_url"] + "oauth2/v3/userinfo", verify=emulator.ca_file, timeout=10)
    assert me.status_code == 200
    assert me.json() == DEFAULT_PROFILES["google"]

    authorize, token_req, profile = emulator.requests
    assert authorize["method"] == "GET" and authorize["args"]["access_type"] == "online"
    assert token_req["provider"] == "google" and token_req["path"] == "/google/token"
    assert token_req["headers"]["Authorization"].startswith("Basic ")  # requests-oauthlib
    assert token_req["form"]["redirect_uri"] == callback("google")
    assert profile["headers"]["Authorization"] == f"Bearer {token['access_token']}"


def test_google_answers_the_scope_string_as_requested(emulator):
    code = get_code(emulator, "google")
    resp = token_request(emulator, "google", code)
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.json()["scope"] == (
        "openid https://www.googleapis.com/auth/userinfo.email "
        "https://www.googleapis.com/auth/userinfo.profile"
    )


def test_facebook_code_flow_client_secret_in_body(emulator):
    ep = emulator.endpoints("facebook")
    client_id, secret = emulator.clients["facebook"]
    with OAuth2Session(client_id, redirect_uri=callback("facebook"), scope=SCOPES["facebook"]) as s:
        url, _ = s.authorization_url(ep["authorization_url"])
        token = s.fetch_token(
            ep["token_url"],
            authorization_response=emulator.approve(url),
            client_secret=secret,
            include_client_id=True,
            verify=emulator.ca_file,
            timeout=10,
        )
        me = s.get(
            ep["api_base_url"] + "me?fields=id,name,email,picture",
            verify=emulator.ca_file,
            timeout=10,
        )
    assert me.json() == {
        "id": "f-2002",
        "name": "Frank F",
        "email": "frank@facebook.test",
        "picture": {"data": {"url": DEFAULT_PROFILES["facebook"]["picture"]}},
    }
    token_req = emulator.requests[1]
    assert "Authorization" not in token_req["headers"]
    assert token_req["form"]["client_id"] == client_id
    assert token_req["form"]["client_secret"] == secret
    # Only the fields asked for; id and name when none are.
    assert profile_get(emulator, "facebook", token["access_token"], fields="id,email").json() == {
        "id": "f-2002",
        "email": "frank@facebook.test",
    }
    assert profile_get(emulator, "facebook", token["access_token"]).json() == {
        "id": "f-2002",
        "name": "Frank F",
    }


def test_facebook_token_endpoint_also_answers_get(emulator):
    client_id, secret = emulator.clients["facebook"]
    code = get_code(emulator, "facebook")
    params = {
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uri": callback("facebook"),
        "code": code,
        "grant_type": "authorization_code",
    }
    resp = requests.get(
        emulator.endpoints("facebook")["token_url"],
        params=params,
        verify=emulator.ca_file,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["scope"] == "email public_profile"


def test_twitter_code_flow_with_pkce(emulator):
    ep = emulator.endpoints("twitter")
    client_id, secret = emulator.clients["twitter"]
    with OAuth2Session(
        client_id, redirect_uri=callback("twitter"), scope=SCOPES["twitter"], pkce="S256"
    ) as s:
        url, _ = s.authorization_url(ep["authorization_url"])
        token = s.fetch_token(
            ep["token_url"],
            authorization_response=emulator.approve(url),
            client_secret=secret,
            verify=emulator.ca_file,
            timeout=10,
        )
        assert token["refresh_token"].startswith("twitter-rt-")
        me = s.get(
            ep["api_base_url"] + "2/users/me?user.fields=profile_image_url,confirmed_email",
            verify=emulator.ca_file,
            timeout=10,
        )
    assert me.json() == {"data": DEFAULT_PROFILES["twitter"]}
    authorize, token_req, _ = emulator.requests
    assert authorize["args"]["code_challenge_method"] == "S256"
    assert len(token_req["form"]["code_verifier"]) >= 43
    # Without user.fields: id, name and username only.
    plain = profile_get(emulator, "twitter", token["access_token"]).json()
    assert plain == {"data": {"id": "x-3003", "name": "Xena X", "username": "xena"}}


def test_github_code_flow_as_github_answers(emulator, monkeypatch):
    """GitHub's token answer: JSON only when asked for, the scope comma-separated, no
    expiry; /user without the addresses, /user/emails the list."""
    # oauthlib reads "read:user,user:email" as a changed scope (the service asks for one
    # scope for that reason); relaxed here to see the answer.
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    ep = emulator.endpoints("github")
    client_id, secret = emulator.clients["github"]
    with OAuth2Session(client_id, redirect_uri=callback("github"), scope=SCOPES["github"]) as s:
        url, _ = s.authorization_url(ep["authorization_url"])
        token = s.fetch_token(
            ep["token_url"],
            authorization_response=emulator.approve(url),
            client_secret=secret,
            verify=emulator.ca_file,
            timeout=10,
            include_client_id=True,
        )
        assert token["scope"] == ["read:user,user:email"]
        assert token["token_type"] == "bearer" and "expires_in" not in token
        user = s.get(ep["api_base_url"] + "user", verify=emulator.ca_file, timeout=10).json()
        emails = s.get(ep["api_base_url"] + "user/emails", verify=emulator.ca_file, timeout=10)
    expected = dict(DEFAULT_PROFILES["github"])
    assert emails.json() == expected.pop("emails")
    assert user == expected and isinstance(user["id"], int)
    # Without Accept: application/json, a form-encoded body; a refused code is a 200 too.
    plain = token_request(emulator, "github", get_code(emulator, "github"), auth="body")
    assert plain.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(plain.text)["access_token"][0].startswith("github-at-")
    refused = token_request(emulator, "github", "made-up", auth="body")
    assert refused.status_code == 200 and parse_qs(refused.text)["error"] == ["invalid_grant"]


def test_profile_malformed_knob(emulator):
    token = google_token(emulator)
    emulator.configure("google", profile_malformed=True)
    resp = profile_get(emulator, "google", token)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        resp.json()


def test_the_app_can_trust_the_emulator_through_requests_ca_bundle(emulator, monkeypatch):
    """How an app that does not pass verify= (Flask-Dance) reaches the emulator."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.ca_file)
    code = get_code(emulator, "google")
    client_id, secret = emulator.clients["google"]
    with OAuth2Session(client_id, redirect_uri=callback("google"), scope=SCOPES["google"]) as s:
        token = s.fetch_token(
            emulator.endpoints("google")["token_url"], code=code, client_secret=secret, timeout=10
        )
    assert token["access_token"].startswith("google-at-")


def test_an_untrusting_client_refuses_the_certificate(emulator):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(emulator.profile_url("google"), timeout=10)


# -- PKCE ------------------------------------------------------------------------------


def test_twitter_authorize_without_pkce_is_an_invalid_request(emulator):
    for params in ({}, {"code_challenge": pkce_pair()[1], "code_challenge_method": "plain"}):
        answer = query(emulator.approve(authorize_url(emulator, "twitter", **params)))
        assert answer["error"] == "invalid_request"
        assert answer["state"] == "st-123"
        assert "code" not in answer


def test_twitter_token_needs_the_matching_verifier(emulator):
    verifier, challenge = pkce_pair()
    code = get_code(emulator, "twitter", code_challenge=challenge, code_challenge_method="S256")

    missing = token_request(emulator, "twitter", code)
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"

    wrong = token_request(emulator, "twitter", code, code_verifier=pkce_pair()[0])
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"

    # The failures did not spend the code: the right verifier still works.
    right = token_request(emulator, "twitter", code, code_verifier=verifier)
    assert right.status_code == 200, right.text


def test_any_provider_checks_a_challenge_it_was_sent(emulator):
    verifier, challenge = pkce_pair()
    code = get_code(emulator, "google", code_challenge=challenge, code_challenge_method="S256")
    assert token_request(emulator, "google", code, code_verifier="x" * 43).status_code == 400
    assert token_request(emulator, "google", code, code_verifier=verifier).status_code == 200


# -- codes ------------------------------------------------------------------------------


def test_a_code_is_single_use_and_reuse_revokes_its_token(emulator):
    code = get_code(emulator, "google")
    first = token_request(emulator, "google", code)
    assert first.status_code == 200
    access_token = first.json()["access_token"]
    assert profile_get(emulator, "google", access_token).status_code == 200

    again = token_request(emulator, "google", code)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert profile_get(emulator, "google", access_token).status_code == 401


def test_redirect_uri_must_repeat_the_authorize_one(emulator):
    code = get_code(emulator, "facebook")
    for redirect_uri in ("https://localhost/elsewhere", None):
        resp = token_request(emulator, "facebook", code, redirect_uri=redirect_uri)
        assert resp.status_code == 400
        assert resp.json()["error"] == "invalid_grant"
    assert token_request(emulator, "facebook", code).status_code == 200


def test_a_code_belongs_to_its_provider_and_unknown_codes_fail(emulator):
    google_code = get_code(emulator, "google")
    assert token_request(emulator, "facebook", google_code).json()["error"] == "invalid_grant"
    assert token_request(emulator, "google", "made-up").json()["error"] == "invalid_grant"
    bad_grant = token_request(emulator, "google", google_code, grant_type="password")
    assert bad_grant.json()["error"] == "unsupported_grant_type"


def test_the_redirect_keeps_a_query_the_callback_already_has(emulator):
    location = emulator.approve(
        authorize_url(emulator, "google", redirect_uri="https://localhost/cb?x=1")
    )
    assert location.startswith("https://localhost/cb?x=1&code=")


# -- client authentication --------------------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "body"])
def test_wrong_client_secret_is_401_invalid_client(emulator, auth):
    code = get_code(emulator, "google")
    client_id, _ = emulator.clients["google"]
    if auth == "basic":
        resp = token_request(emulator, "google", code, auth=(client_id, "wrong"))
    else:
        resp = token_request(emulator, "google", code, auth="body", client_secret="wrong")
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert token_request(emulator, "google", code, auth=auth).status_code == 200


def test_no_client_credentials_or_another_providers_is_401(emulator):
    verifier, challenge = pkce_pair()
    code = get_code(emulator, "twitter", code_challenge=challenge, code_challenge_method="S256")
    client_id, secret = emulator.clients["twitter"]
    for auth, form in [
        (None, {}),
        ("body", {"client_secret": None}),  # a public client: X wants a confidential one here
        (emulator.clients["google"], {}),
        ((client_id, secret), {"client_id": "google-client-id"}),  # Basic and body disagree
    ]:
        resp = token_request(emulator, "twitter", code, auth=auth, code_verifier=verifier, **form)
        assert resp.status_code == 401, (auth, form)
    assert token_request(emulator, "twitter", code, code_verifier=verifier).status_code == 200


def test_authorize_refuses_an_unknown_client_without_redirecting(emulator):
    for params in ({"client_id": "nobody"}, {"redirect_uri": None}):
        with pytest.raises(AssertionError, match="400"):
            emulator.approve(authorize_url(emulator, "facebook", **params))
    with pytest.raises(ValueError, match="not on this emulator"):
        emulator.approve("https://accounts.google.com/o/oauth2/v2/auth?client_id=x")


def test_authorize_errors_for_bad_requests_go_back_to_the_client(emulator):
    no_state = query(emulator.approve(authorize_url(emulator, "google", state=None)))
    assert no_state["error"] == "invalid_request" and "state" not in no_state
    token_flow = query(emulator.approve(authorize_url(emulator, "google", response_type="token")))
    assert token_flow["error"] == "unsupported_response_type"


# -- knobs: authorize -------------------------------------------------------------------


def test_deny_answers_access_denied_with_state(emulator):
    emulator.configure("facebook", deny=True)
    answer = query(emulator.approve(authorize_url(emulator, "facebook", state="s-9")))
    assert answer["error"] == "access_denied"
    assert answer["error_description"]
    assert answer["state"] == "s-9"
    assert "code" not in answer
    # Per provider: Google still approves.
    assert get_code(emulator, "google")


def test_authorize_error_for_every_provider(emulator):
    emulator.configure(authorize_error="server_error")
    for provider in PROVIDERS:
        extra = {}
        if provider == "twitter":
            extra = {"code_challenge": pkce_pair()[1], "code_challenge_method": "S256"}
        answer = query(emulator.approve(authorize_url(emulator, provider, **extra)))
        assert answer["error"] == "server_error"
        assert answer["state"] == "st-123"


def test_unknown_knob_is_a_type_error(emulator):
    with pytest.raises(TypeError, match="unknown knobs"):
        emulator.configure("google", denied=True)
    with pytest.raises(ValueError, match="unknown provider"):
        emulator.configure("x", deny=True)


# -- knobs: token -----------------------------------------------------------------------


def test_token_error_and_token_status(emulator):
    code = get_code(emulator, "google")
    emulator.knobs["google"].token_error = "invalid_grant"
    resp = token_request(emulator, "google", code)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"

    emulator.configure("google", token_error=None, token_status=500)
    resp = token_request(emulator, "google", code)
    assert resp.status_code == 500
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "<html>" in resp.text

    emulator.configure("google", token_status=None)
    assert token_request(emulator, "google", code).status_code == 200  # knobs spend nothing


def test_token_scope_knob_makes_oauthlib_see_a_changed_scope(emulator):
    """Why the scope is echoed as requested: oauthlib refuses a token whose scope differs."""
    emulator.configure("google", token_scope="email profile")
    client_id, secret = emulator.clients["google"]
    with OAuth2Session(client_id, redirect_uri=callback("google"), scope=SCOPES["google"]) as s:
        url, _ = s.authorization_url(emulator.endpoints("google")["authorization_url"])
        with pytest.raises(Warning, match="Scope has changed"):
            s.fetch_token(
                emulator.endpoints("google")["token_url"],
                authorization_response=emulator.approve(url),
                client_secret=secret,
                verify=emulator.ca_file,
                timeout=10,
            )


def test_token_delay_times_a_client_out(emulator):
    code = get_code(emulator, "google")
    emulator.configure("google", token_delay=30)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        token_request(emulator, "google", code, timeout=0.5)
    assert time.monotonic() - started < 5
    # The emulator still answers other requests meanwhile; the sleeper is woken by reset().
    assert get_code(emulator, "facebook")


def test_close_is_prompt_while_a_token_request_sleeps(tmp_path):
    emu = ProviderEmulator(tmp_path / "certs")
    try:
        code = get_code(emu, "google")
        emu.configure("google", token_delay=60)
        with pytest.raises(requests.exceptions.ReadTimeout):
            token_request(emu, "google", code, timeout=0.5)
        # An idle connection, never even shaking hands, must not hold up close() either.
        idle = socket.create_connection(("127.0.0.1", emu.port), timeout=5)
        time.sleep(0.2)
    finally:
        started = time.monotonic()
        emu.close()
        elapsed = time.monotonic() - started
    try:
        assert elapsed < 2, f"close() took {elapsed:.1f}s"
        assert idle.recv(1) == b""  # the server cut it
    finally:
        idle.close()
    assert not [t for t in threading.enumerate() if t.name.endswith(str(emu.port))]
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(emu.base_url, verify=emu.ca_file, timeout=2)
    emu.close()  # idempotent


# -- profiles ---------------------------------------------------------------------------


def google_token(emu: ProviderEmulator) -> str:
    resp = token_request(emu, "google", get_code(emu, "google"))
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def test_profile_needs_a_bearer_token_this_emulator_issued_for_that_provider(emulator):
    token = google_token(emulator)
    no_auth = profile_get(emulator, "google", None)
    assert no_auth.status_code == 401
    assert no_auth.json()["error"] == "invalid_token"
    assert no_auth.headers["WWW-Authenticate"].startswith("Bearer")
    assert profile_get(emulator, "google", "made-up").status_code == 401
    assert profile_get(emulator, "facebook", token).status_code == 401  # Google's token
    basic = requests.get(
        emulator.profile_url("google"), auth=("a", "b"), verify=emulator.ca_file, timeout=10
    )
    assert basic.status_code == 401
    assert profile_get(emulator, "google", token).status_code == 200


def test_profiles_are_configurable(emulator):
    emulator.profiles["google"].pop("sub")
    emulator.profiles["google"]["email_verified"] = False
    assert profile_get(emulator, "google", google_token(emulator)).json() == {
        "email": "grace@gmail.test",
        "email_verified": False,
        "name": "Grace G",
        "picture": DEFAULT_PROFILES["google"]["picture"],
    }
    emulator.profiles["twitter"] = {"name": "No Id", "username": "noid"}  # no id, no e-mail
    verifier, challenge = pkce_pair()
    code = get_code(emulator, "twitter", code_challenge=challenge, code_challenge_method="S256")
    token = token_request(emulator, "twitter", code, code_verifier=verifier).json()["access_token"]
    me = profile_get(emulator, "twitter", token, **{"user.fields": "confirmed_email"})
    assert me.json() == {"data": {"name": "No Id", "username": "noid"}}


def test_profile_status_and_delay(emulator):
    token = google_token(emulator)
    emulator.configure("google", profile_status=500)
    failed = profile_get(emulator, "google", token)
    assert failed.status_code == 500
    assert failed.headers["Content-Type"].startswith("text/html")

    emulator.configure("google", profile_status=None, profile_delay=30)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(
            emulator.profile_url("google"),
            headers={"Authorization": f"Bearer {token}"},
            verify=emulator.ca_file,
            timeout=0.5,
        )


def test_reset_puts_everything_back(emulator):
    token = google_token(emulator)
    emulator.configure(deny=True, token_delay=3)
    emulator.profiles["facebook"]["name"] = "Changed"
    emulator.clients["google"] = ("other", "other")
    assert emulator.requests
    emulator.reset()
    assert emulator.requests == []
    assert all(k == type(k)() for k in emulator.knobs.values())
    assert emulator.profiles == DEFAULT_PROFILES
    assert emulator.clients["google"][0] == "google-client-id"
    assert profile_get(emulator, "google", token).status_code == 401  # tokens forgotten


def test_default_clients(emulator):
    for provider in PROVIDERS:
        client_id, secret = emulator.clients[provider]
        assert client_id == f"{provider}-client-id"
        assert secret.startswith(f"{provider}-secret-")
    assert emulator.base_url.startswith("https://127.0.0.1:")
