"""A real passkey in headless Chromium (the DevTools protocol's virtual authenticator) over
real HTTPS: registered on the account page, then used without a password and as the second
factor, renamed and removed; replayed, expired, malformed, foreign and cloned answers are each
refused with a message. Screenshots land in /tmp/passkey-shots for a human to look at."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from audit_events import events
from playwright.sync_api import BrowserContext, Page, expect
from sqlalchemy import select, update
from test_browser import DESKTOP, PHONE, launch, playwright, shots, watch_csp  # noqa: F401

from conftest import PASSWORD, dispose, make_app
from identity import certs
from identity.auth import accounts
from identity.auth.passkeys import CLONED, NOT_YOURS, STALE
from identity.extensions import db
from identity.models import Passkey, User, WebauthnChallenge
from identity.models.users import utcnow
from servers import https_server, nss_home

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def idp(database_url, tmp_path_factory) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("passkey-idp")

    def build(port: int):
        app = make_app(database_url, tmp, ISSUER=f"https://localhost:{port}")
        with app.app_context():
            db.create_all()
        return app

    with https_server(build, tmp / "certs") as (app, port):
        yield SimpleNamespace(
            app=app, url=f"https://localhost:{port}", ca=tmp / "certs" / certs.CA_CERT
        )
    dispose(app)


@pytest.fixture(scope="module")
def home(idp, tmp_path_factory) -> Path:
    return nss_home(tmp_path_factory.mktemp("passkey-home"), idp.ca)


def person(idp, username: str) -> None:
    """An account whose address is verified (an unproven one may add no way to sign in)."""
    with idp.app.app_context():
        user = accounts.create_local(username, f"{username}@example.org", PASSWORD)
        user.email_verified = True
        db.session.commit()


# Chromium's virtual authenticator answers a conditional (autofill) request at once, as if
# the person picked the passkey in the username field: to test the button, the page sees a
# browser without passkey autofill.
NO_AUTOFILL = """Object.defineProperty(PublicKeyCredential, "isConditionalMediationAvailable",
  {value: () => Promise.resolve(false)});"""


def browser(
    playwright,  # noqa: F811
    home,
    profile: str,
    autofill: bool = False,
) -> tuple[BrowserContext, Page, object]:
    """A browser whose page has a virtual platform authenticator: resident keys, user
    verification that succeeds (a screen lock that says yes)."""
    context = launch(playwright, home, profile, viewport=DESKTOP)
    if not autofill:
        context.add_init_script(NO_AUTOFILL)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    found = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )
    return context, page, SimpleNamespace(cdp=cdp, id=found["authenticatorId"])


def password_sign_in(page: Page, idp, username: str) -> None:
    page.goto(f"{idp.url}/login")
    page.get_by_label("Username or e-mail").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def add_passkey(page: Page, idp, name: str) -> None:
    """Add a passkey on the account page; the first second factor shows recovery codes."""
    page.goto(f"{idp.url}/account")
    page.get_by_label("Name of the new passkey").fill(name)
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator(".notice-success")).to_contain_text(f"Your passkey “{name}” is added")
    if page.url.endswith("/account/passkeys/recovery-codes"):
        expect(page.locator("#recovery-codes li")).to_have_count(10)
        page.get_by_role("link", name="I have saved them").click()


def session_of(page: Page, idp) -> dict:
    """The signed session cookie's content, as the server reads it."""
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "__Host-session")
    return idp.app.session_interface.get_signing_serializer(idp.app).loads(cookie)


def age_session(page: Page, idp, seconds: int = 6 * 60) -> None:
    """Time passes: the browser's sign-in is `seconds` older (the cookie signed again, as
    the server would)."""
    data = dict(session_of(page, idp))
    data["auth_time"] -= seconds
    value = idp.app.session_interface.get_signing_serializer(idp.app).dumps(data)
    page.context.add_cookies(
        [{"name": "__Host-session", "value": value, "url": f"{idp.url}/", "secure": True}]
    )


FETCH = """async ([url, body, csrf]) => {
  const r = await fetch(url, {method: "POST", body: body, credentials: "same-origin",
    headers: {"Content-Type": "application/json", "Accept": "application/json",
              "X-CSRFToken": csrf}});
  let data = null;
  try { data = await r.json(); } catch (e) {}
  return {status: r.status, json: data};
}"""


def post(page: Page, path: str, body: str = "{}") -> dict:
    """POST from the page itself (its cookies, its TLS trust), as the page's script does."""
    csrf = page.locator("[data-passkey]").first.get_attribute("data-csrf")
    return page.evaluate(FETCH, [path, body, csrf])


def test_register_then_sign_in_without_password_then_remove(playwright, idp, home):  # noqa: F811
    person(idp, "ada")
    context, page, _ = browser(playwright, home, "profile-ada")
    try:
        csp = watch_csp(page)
        password_sign_in(page, idp, "ada")
        expect(page).to_have_url(f"{idp.url}/account")
        add_passkey(page, idp, "Work laptop")
        # The first second factor came with recovery codes, shown that once.
        expect(page.locator("#recovery-left")).to_have_text("10 of 10 left")
        page.goto(f"{idp.url}/account/passkeys/recovery-codes")
        expect(page).to_have_url(f"{idp.url}/account#passkeys")
        row = page.locator(".methods.passkeys li")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("Work laptop")
        expect(row).to_contain_text("not used yet")
        expect(row).to_contain_text("on this device only")
        shots(page, "passkeys", "account-passkeys")

        # Passwordless and usernameless: the username field stays empty.
        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{idp.url}/login")
        expect(page.get_by_label("Username or e-mail")).to_have_attribute(
            "autocomplete", "username webauthn"
        )
        shots(page, "passkeys", "login-with-passkey-button")
        page.get_by_role("button", name="Sign in with a passkey").click()
        expect(page).to_have_url(f"{idp.url}/account")
        # A device-bound key, verified by the authenticator: two factors, no second step.
        assert session_of(page, idp)["amr"] == ["hwk", "user", "mfa"]
        expect(page.locator(".methods.passkeys li")).to_contain_text("last used")

        page.locator(".passkey-manage summary").click()
        page.get_by_label("New name").fill("Old laptop")
        page.get_by_role("button", name="Rename").click()
        expect(page.locator(".methods.passkeys li strong")).to_have_text("Old laptop")

        # Signed in minutes ago no more: the removal asks for a proof, here the passkey
        # itself (user verification: the screen lock).
        age_session(page, idp)
        page.reload()
        page.locator(".passkey-manage summary").click()
        expect(page.locator(".passkey-manage").get_by_label("Your password")).to_be_visible()
        shots(page, "passkeys", "remove-confirm")
        page.locator(".passkey-manage").get_by_role(
            "button", name="Or confirm with a passkey and remove"
        ).click()
        expect(page.locator(".notice-success")).to_contain_text("is removed")
        expect(page.locator(".methods.passkeys li")).to_have_count(0)
        assert [e.type for e in events(idp.app, "passkey.removed")] == ["passkey.removed"]

        # Gone from the server: the authenticator still offers it, the server refuses it.
        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{idp.url}/login")
        page.get_by_role("button", name="Sign in with a passkey").click()
        expect(page.get_by_role("alert")).to_contain_text("not registered here")
        assert csp == [], csp
    finally:
        context.close()


def test_passkey_autofill_in_the_username_field_signs_in(playwright, idp, home):  # noqa: F811
    """Conditional mediation: the login page asks for a passkey as soon as it loads, and the
    browser offers it in the username field; picking it signs in, no button, no password."""
    person(idp, "ana")
    context, page, _ = browser(playwright, home, "profile-ana", autofill=True)
    try:
        password_sign_in(page, idp, "ana")
        add_passkey(page, idp, "Laptop")
        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{idp.url}/login")
        expect(page).to_have_url(f"{idp.url}/account")
        assert session_of(page, idp)["amr"] == ["hwk", "user", "mfa"]
    finally:
        context.close()


def test_a_passkey_as_the_second_factor_after_a_password(playwright, idp, home):  # noqa: F811
    person(idp, "bea")
    context, page, _ = browser(playwright, home, "profile-bea")
    try:
        password_sign_in(page, idp, "bea")
        add_passkey(page, idp, "Phone")
        page.get_by_role("button", name="Sign out").click()
        password_sign_in(page, idp, "bea")
        expect(page).to_have_url(f"{idp.url}/login/second-factor")
        shots(page, "passkeys", "second-factor-with-passkey")
        page.get_by_role("button", name="Use a passkey").click()
        expect(page).to_have_url(f"{idp.url}/account")
        assert session_of(page, idp)["amr"] == ["pwd", "hwk", "user", "mfa"]
    finally:
        context.close()


def test_replayed_answer_is_refused(playwright, idp, home):  # noqa: F811
    """The same answer, sent again with the same cookie (a copy of the request): the
    challenge was spent by the first, so the second is refused with a message."""
    person(idp, "cleo")
    context, page, _ = browser(playwright, home, "profile-cleo")
    try:
        password_sign_in(page, idp, "cleo")
        add_passkey(page, idp, "Laptop")
        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{idp.url}/login")
        with page.expect_request(f"{idp.url}/login/passkey") as seen:
            page.get_by_role("button", name="Sign in with a passkey").click()
        expect(page).to_have_url(f"{idp.url}/account")
        request = seen.value
        replay = requests.Session()
        replay.trust_env = False  # the machine-wide CA bundle would win over `verify`
        answer = replay.post(
            request.url,
            data=request.post_data,
            headers={k: v for k, v in request.all_headers().items() if not k.startswith(":")},
            verify=str(idp.ca),
            timeout=10,
        )
        assert answer.status_code == 400
        assert answer.json()["error_description"] == STALE
    finally:
        context.close()


def test_expired_challenge_is_refused_with_a_message(playwright, idp, home):  # noqa: F811
    person(idp, "dora")
    context, page, _ = browser(playwright, home, "profile-dora")
    try:
        password_sign_in(page, idp, "dora")
        add_passkey(page, idp, "Laptop")
        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{idp.url}/login")

        def age_challenges(route):
            with idp.app.app_context():
                db.session.execute(
                    update(WebauthnChallenge).values(created_at=utcnow() - timedelta(minutes=6))
                )
                db.session.commit()
            route.continue_()

        page.route(f"{idp.url}/login/passkey", age_challenges)
        page.get_by_role("button", name="Sign in with a passkey").click()
        expect(page.get_by_role("alert")).to_have_text(STALE)
        expect(page).to_have_url(f"{idp.url}/login")
    finally:
        context.close()


def test_malformed_answers_get_a_json_message_never_a_500(playwright, idp, home):  # noqa: F811
    context, page, _ = browser(playwright, home, "profile-malformed")
    try:
        page.goto(f"{idp.url}/login")
        bodies = [
            "not json",
            json.dumps([1, 2]),
            json.dumps({"credential": "x"}),
            json.dumps({"credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key"}}),
            json.dumps(
                {
                    "credential": {
                        "id": "AAAA",
                        "rawId": "AAAA",
                        "type": "public-key",
                        "response": {
                            "clientDataJSON": "!!",
                            "authenticatorData": "AA",
                            "signature": "AA",
                        },
                    }
                }
            ),
        ]
        for body in bodies:
            post(page, "/login/passkey/options")
            answer = post(page, "/login/passkey", body)
            assert answer["status"] in (400, 401), (body, answer)
            assert answer["json"]["error_description"], body
        # No challenge at all (none asked, or this one spent): a message too.
        answer = post(page, "/login/passkey", json.dumps({"credential": {}}))
        assert answer["status"] == 400
        assert answer["json"]["error_description"] == STALE
    finally:
        context.close()


def test_a_passkey_of_another_account_is_no_second_factor(playwright, idp, home):  # noqa: F811
    """Eve has a passkey; Finn's password sign-in waits for his second factor; Eve's signed
    answer (captured from her own sign-in) is refused there."""
    person(idp, "eve")
    person(idp, "finn")
    context, page, _ = browser(playwright, home, "profile-eve-finn")
    try:
        password_sign_in(page, idp, "finn")
        add_passkey(page, idp, "Finn's key")
        page.get_by_role("button", name="Sign out").click()
        password_sign_in(page, idp, "eve")
        add_passkey(page, idp, "Eve's key")
        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{idp.url}/login")
        captured = {}

        def capture(route):
            captured["body"] = json.loads(route.request.post_data)
            route.abort()

        page.route(f"{idp.url}/login/passkey", capture)
        # Two passkeys for this site on the authenticator: it picks one; sign in until Eve's.
        page.get_by_role("button", name="Sign in with a passkey").click()
        page.wait_for_timeout(500)
        page.unroute(f"{idp.url}/login/passkey")
        with idp.app.app_context():
            eve = db.session.scalar(select(User).where(User.username == "eve"))
            eve_keys = {
                p.credential_id for p in db.session.scalars(select(Passkey)) if p.user_id == eve.id
            }
            finn_keys = {
                p.credential_id for p in db.session.scalars(select(Passkey)) if p.user_id != eve.id
            }
        chosen = captured["body"]["credential"]["rawId"]
        foreign = captured["body"]["credential"]
        victim = "finn" if chosen in eve_keys else "eve"
        assert chosen in eve_keys | finn_keys

        password_sign_in(page, idp, victim)
        expect(page).to_have_url(f"{idp.url}/login/second-factor")
        post(page, "/login/second-factor/passkey/options")
        answer = post(page, "/login/second-factor/passkey", json.dumps({"credential": foreign}))
        assert answer["status"] == 401
        assert answer["json"]["error_description"] == NOT_YOURS
        assert any(
            e.data.get("reason") == "other_account" for e in events(idp.app, "passkey.failure")
        )
        page.goto(f"{idp.url}/account")
        expect(page).not_to_have_url(f"{idp.url}/account")
    finally:
        context.close()


def test_a_cloned_authenticator_is_refused_and_audited(playwright, idp, home):  # noqa: F811
    """The server saw a higher counter than this authenticator now presents (another copy
    of the key was used since): refused, and an audit event says so."""
    person(idp, "gus")
    context, page, _ = browser(playwright, home, "profile-gus")
    try:
        password_sign_in(page, idp, "gus")
        add_passkey(page, idp, "Laptop")
        with idp.app.app_context():
            gus = db.session.scalar(select(User).where(User.username == "gus"))
            db.session.execute(
                update(Passkey).where(Passkey.user_id == gus.id).values(sign_count=1000)
            )
            db.session.commit()
        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{idp.url}/login")
        page.get_by_role("button", name="Sign in with a passkey").click()
        expect(page.get_by_role("alert")).to_have_text(CLONED)
        expect(page).to_have_url(f"{idp.url}/login")
        cloned = events(idp.app, "passkey.cloned")
        assert len(cloned) == 1 and cloned[0].data["stored_count"] == 1000
        shots(page, "passkeys", "login-passkey-refused")
    finally:
        context.close()


def test_an_app_asking_for_phr_gets_a_passkey_step_after_a_code(playwright, idp, home):  # noqa: F811
    """Signed in with password and TOTP code (acr mfa), the person opens an app that asks
    acr_values=phr: the step takes only a passkey, then the app gets its code, worth phr."""
    import base64
    import hashlib
    import secrets
    from urllib.parse import parse_qs, urlencode, urlsplit

    from test_mfa import enrolled, now_code

    from identity.models import AuthorizationCode
    from identity.oidc import clients

    person(idp, "hana")
    with idp.app.app_context():
        client, _ = clients.create(
            "vault", ["https://app.example/cb"], public=True, skip_consent=True
        )
        client_id = client.client_id
    context, page, _ = browser(playwright, home, "profile-hana")
    try:
        password_sign_in(page, idp, "hana")
        add_passkey(page, idp, "Laptop")
        secret, _ = enrolled(idp.app, "hana")
        page.get_by_role("button", name="Sign out").click()
        password_sign_in(page, idp, "hana")
        page.get_by_label("Code").fill(now_code(secret, 1))
        page.get_by_role("button", name="Continue").click()
        expect(page).to_have_url(f"{idp.url}/account")
        assert session_of(page, idp)["amr"] == ["pwd", "otp", "mfa"]

        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .decode()
            .rstrip("=")
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": "https://app.example/cb",
                "scope": "openid",
                "state": "s1",
                "nonce": "n1",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "acr_values": "phr",
            }
        )
        page.goto(f"{idp.url}/authorize?{query}")
        expect(page).to_have_url(f"{idp.url}/login/second-factor")
        expect(page.get_by_label("Code")).to_have_count(0)
        shots(page, "passkeys", "step-up-passkey-only")
        # The app's address does not resolve here: the request the browser makes is enough.
        with page.expect_request(lambda r: r.url.startswith("https://app.example/cb")) as sent:
            page.get_by_role("button", name="Use a passkey").click()
        answer = parse_qs(urlsplit(sent.value.url).query)
        assert answer["state"] == ["s1"] and answer["code"]
        with idp.app.app_context():
            code = db.session.scalars(select(AuthorizationCode)).all()[-1]
            assert code.get_acr() == "phr"
            assert code.get_amr() == ["pwd", "otp", "mfa", "hwk", "user"]
    finally:
        context.close()
