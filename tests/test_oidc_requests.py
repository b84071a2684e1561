"""Authorization requests to the letter (OpenID Connect Core 3.1.2, 6; RFC 6749 2.3, 3.1;
RFC 8725 3.11): what is not supported says so, form_post delivers, each parameter once,
only our ID tokens are hints, and no redirect_uri or parameter makes /authorize fail."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oidc_rp import CALLBACK, App, Person, page_form, register, sign_in_and_allow

from identity.oidc import clients

# -- item 2: unsupported features say so; form_post ----------------------------------------


def test_discovery_lists_the_response_modes_supported(idp):
    body = requests.get(f"{idp.url}/.well-known/openid-configuration", verify=idp.ca).json()
    assert body["response_modes_supported"] == ["query", "form_post"]
    assert body["request_parameter_supported"] is False
    assert body["request_uri_parameter_supported"] is False


@pytest.mark.parametrize(
    "extra, error",
    [
        ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
        ({"request_uri": "https://app.example/request.jwt"}, "request_uri_not_supported"),
        ({"registration": '{"client_name": "x"}'}, "registration_not_supported"),
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"response_mode": "jwt"}, "invalid_request"),
    ],
)
def test_unsupported_request_features_are_refused_to_the_app(idp, extra, error):
    app = App(idp, register(idp))
    person = Person(idp)
    person.sign_in(person.open(f"{idp.url}/login"))
    params = app.callback_params(person.open(app.authorization_url(**extra)))
    assert params["error"] == error
    assert params["state"] == app.state and params["iss"] == idp.url
    assert "code" not in params


def form_post(page: requests.Response) -> dict:
    """The fields of a form_post answer, checking it is one: a form to the app's callback,
    submitted by the script file (the CSP forbids inline script) or the button."""
    assert page.status_code == 200 and page.final.startswith(idp_url(page))
    assert page.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert '<script src="/static/form_post.js">' in page.text and "onload" not in page.text
    assert "<noscript><button" in page.text
    form = page_form(page.text, CALLBACK)
    assert form["action"] == CALLBACK
    return form["fields"]


def idp_url(page: requests.Response) -> str:
    parts = urlsplit(page.url)
    return f"{parts.scheme}://{parts.netloc}"


def test_form_post_delivers_the_code_in_a_posted_form(idp):
    app = App(idp, register(idp))
    person = Person(idp)
    fields = form_post(sign_in_and_allow(person, app, response_mode="form_post"))
    assert fields["state"] == app.state and fields["iss"] == idp.url
    token = app.session.fetch_token(
        f"{idp.url}/token", code=fields["code"], code_verifier=app.verifier, verify=idp.ca
    )
    assert app.verify(token["id_token"]).claims["nonce"] == app.nonce
    # The script that submits it is served, and is allowed by the CSP ('self').
    script = person.http.get(f"{idp.url}/static/form_post.js", verify=idp.ca)
    assert script.status_code == 200 and "submit()" in script.text


def test_form_post_delivers_errors_and_denials(idp):
    app = App(idp, register(idp))
    fields = form_post(
        Person(idp).open(app.authorization_url(prompt="none", response_mode="form_post"))
    )
    assert fields["error"] == "login_required" and fields["state"] == app.state
    person = Person(idp)
    page = person.sign_in(person.open(app.authorization_url(response_mode="form_post")))
    fields = form_post(person.submit(page, {"decision": "deny"}))
    assert fields["error"] == "access_denied" and "code" not in fields


# -- item 3: redirect_uri required, prompt=consent, each parameter once, one client auth ----


def test_redirect_uri_is_required_on_openid_requests_even_with_one_registered(idp):
    app = App(idp, register(idp))  # one registered URI
    query = {k: v[0] for k, v in parse_qs(urlsplit(app.authorization_url()).query).items()}
    del query["redirect_uri"]
    response = Person(idp).open(f"{idp.url}/authorize?{urlencode(query)}")
    assert response.status_code == 400 and response.final.startswith(idp.url)
    assert "redirect_uri" in response.text and "required" in response.text


def test_prompt_consent_asks_even_a_first_party_app(idp):
    app = App(idp, register(idp, "Portal", skip_consent=True))
    person = Person(idp)
    assert "code" in app.callback_params(sign_in_and_allow(person, app))  # never asked
    page = person.open(app.authorization_url(prompt="consent"))
    assert page.status_code == 200 and "Allow" in page.text and "Portal" in page.text
    params = app.callback_params(person.submit(page, {"decision": "allow"}))
    assert "code" in params
    # prompt=none with consent cannot ask: refused (Core 3.1.2.1: none goes alone).
    params = app.callback_params(person.open(app.authorization_url(prompt="none consent")))
    assert params["error"] == "invalid_request"


@pytest.mark.parametrize(
    "name, value",
    [
        ("nonce", "n2"),
        ("prompt", "login"),
        ("response_mode", "query"),
        ("state", "s2"),
        ("scope", "openid"),
        ("redirect_uri", CALLBACK),
        ("client_id", "other"),
        ("max_age", "0"),
        ("code_challenge", "x" * 43),
        ("login_hint", "bob"),
    ],
)
def test_repeated_authorization_parameters_are_refused(idp, name, value):
    app = App(idp, register(idp))
    url = app.authorization_url(
        prompt="none", max_age="600", login_hint="alice", response_mode="query"
    )
    response = Person(idp).open(f"{url}&{urlencode({name: value})}")
    assert response.status_code == 400 and response.final.startswith(idp.url)
    assert f"Multiple &#39;{name}&#39;" in response.text


@pytest.mark.parametrize(
    "body",
    [
        {"client_secret": "{secret}"},
        {
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": "a.b.c",
        },
    ],
    ids=["basic+client_secret", "basic+client_assertion"],
)
def test_two_client_authentication_methods_are_refused(idp, body):
    app = App(idp, register(idp))
    page = sign_in_and_allow(Person(idp), app)
    code = app.callback_params(page)["code"]
    extra = {k: v.format(secret=app.registered.secret) for k, v in body.items()}
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "code_verifier": app.verifier,
    }
    for path, data in (
        ("/token", form),
        ("/introspect", {"token": "x"}),
        ("/revoke", {"token": "x"}),
    ):
        response = app.post(path, {**data, **extra})  # Basic credentials as well
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"] == "invalid_request", path
    # The code was not spent by the refused request: one method at a time works.
    assert app.post("/token", form).status_code == 200


# -- item 5: only our ID tokens are id_token_hint -----------------------------------------


def test_an_access_token_is_not_an_id_token_hint_at_end_session(idp):
    registered = register(idp, post_logout_redirect_uris=["https://app.example/bye"])
    app = App(idp, registered)
    person = Person(idp)
    token = app.redeem(sign_in_and_allow(person, app))
    response = person.open(
        f"{idp.url}/end_session?id_token_hint={token['access_token']}"
        "&post_logout_redirect_uri=https://app.example/bye"
    )
    assert response.status_code == 400 and response.final.startswith(idp.url)
    assert "not an ID token" in response.text
    # Still signed in; the ID token itself signs out without asking.
    assert "code" in app.callback_params(person.open(app.authorization_url(prompt="none")))
    response = person.open(
        f"{idp.url}/end_session?id_token_hint={token['id_token']}"
        "&post_logout_redirect_uri=https://app.example/bye"
    )
    assert response.final.startswith("https://app.example/bye")


def test_an_access_token_is_not_an_id_token_hint_at_authorize(idp):
    app = App(idp, register(idp))
    person = Person(idp)
    token = app.redeem(sign_in_and_allow(person, app))
    params = app.callback_params(
        person.open(app.authorization_url(id_token_hint=token["access_token"], prompt="none"))
    )
    assert params["error"] == "invalid_request"
    params = app.callback_params(
        person.open(app.authorization_url(id_token_hint=token["id_token"], prompt="none"))
    )
    assert "code" in params


def test_a_logout_token_or_a_signed_token_of_ours_without_id_token_shape_is_no_hint(idp):
    """Signed with our own key and issuer, but typed or shaped as another kind of token."""
    from joserfc import jwt

    from identity.oidc import keys
    from identity.oidc.validation import id_token_hint_claims

    app = App(idp, register(idp))
    base = {"iss": idp.url, "sub": "someone", "aud": app.registered.client_id, "iat": 1}
    with idp.app.test_request_context():
        key = keys.signing_key("RS256")

        def signed(header, claims):
            return jwt.encode({"alg": "RS256", "kid": key.kid, **header}, claims, key)

        assert id_token_hint_claims(signed({"typ": "JWT"}, base)) is not None  # the control
        for header, claims in [
            ({"typ": "logout+jwt"}, base),
            ({"typ": "at+jwt"}, base),
            ({"typ": "JWT"}, {**base, "events": {}}),
            ({"typ": "JWT"}, {**base, "scope": "openid"}),
            ({"typ": "JWT"}, {**base, "client_id": app.registered.client_id}),
            ({"typ": "JWT"}, {**base, "aud": "not-an-app-of-ours"}),
            ({"typ": "JWT"}, {**base, "iss": "https://elsewhere.example"}),
        ]:
            assert id_token_hint_claims(signed(header, claims)) is None, (header, claims)


# -- item 7: no redirect_uri or parameter makes /authorize fail ----------------------------


@pytest.fixture
def notes(app, db) -> str:
    with app.app_context():
        client, _ = clients.create("notes", [CALLBACK])
        return client.client_id


@pytest.mark.parametrize(
    "redirect_uri",
    [
        CALLBACK + '"',
        CALLBACK + "\\",
        CALLBACK + "\x00",
        CALLBACK + "é",
        "https://app.example/cällback",
        "https://app.example/\u202ecallback",
    ],
)
@pytest.mark.parametrize("signed_in", [False, True], ids=["visitor", "signed-in"])
def test_odd_characters_in_redirect_uri_get_a_page_not_a_500(
    client, browser, notes, redirect_uri, signed_in, caplog
):
    if signed_in:
        browser.login()
    query = {"response_type": "code", "client_id": notes, "scope": "openid", "state": "s"}
    response = client.get("/authorize", query_string={**query, "redirect_uri": redirect_uri})
    assert response.status_code == 400 and "Location" not in response.headers
    assert b"This sign-in request is not valid" in response.data
    assert b"not registered for this app" in response.data
    assert "Traceback" not in caplog.text


AUTHORIZE_PARAMETERS = [
    "response_type",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "prompt",
    "max_age",
    "id_token_hint",
    "login_hint",
    "acr_values",
    "response_mode",
    "code_challenge",
    "code_challenge_method",
    "request",
    "request_uri",
    "display",
    "ui_locales",
    "claims",
]
odd_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80
) | st.sampled_from(['"', "\\", "\x00", "é", "none", "login consent", "form_post", "a" * 3000])


@pytest.mark.parametrize("signed_in", [False, True], ids=["visitor", "signed-in"])
def test_authorize_survives_any_parameter_of_a_known_app(client, browser, notes, signed_in):
    """A real app and its real redirect URI, every other parameter fuzzed: never a 500, and a
    redirect only ever to the registered callback or this provider's own pages."""
    if signed_in:
        browser.login()
    base = {
        "response_type": "code",
        "client_id": notes,
        "redirect_uri": CALLBACK,
        "scope": "openid",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=True,
    )
    @given(st.dictionaries(st.sampled_from(AUTHORIZE_PARAMETERS), odd_text, max_size=3))
    def fuzz(changes):
        response = client.get("/authorize", query_string={**base, **changes})
        assert response.status_code < 500, (changes, response.data[:300])
        assert b"Traceback" not in response.data
        location = response.headers.get("Location", "")
        if location:
            assert location.startswith((CALLBACK + "?", "/login", "/step-up")), (
                changes,
                location,
            )

    fuzz()
