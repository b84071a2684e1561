"""Forward authentication through the Flask test client, with a second client standing for
the proxy (it forwards only the browser's Cookie header and X-Forwarded-*): the answers for
each case, the cookie tied to the server-side session, the rules, open redirects, header
values, bad input, the settings, the command line and the admin page. Real nginx and Caddy
in front of an app, with Chromium: tests/test_forward_auth_proxies.py."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from test_mfa import enrolled, now_code

from config import ConfigError
from conftest import PASSWORD, csrf_from, make_app
from identity.admin import accounts as admin_accounts
from identity.auth import accounts
from identity.extensions import db
from identity.forward_auth import cookie, rules
from identity.models import User

IDP = "https://id.example.test"
DOMAIN = "example.test"


@pytest.fixture
def app_overrides() -> dict:
    return {"ISSUER": IDP, "FORWARD_AUTH_COOKIE_DOMAIN": DOMAIN}


@pytest.fixture
def person(app, user):
    """The browser: a test client on the IdP's host name."""
    return app.test_client()


def _post(client, path: str, data: dict, *, token_from: str | None = None):
    page = client.get(token_from or path, base_url=IDP)
    data = {"csrf_token": csrf_from(page.get_data(as_text=True)), **data}
    return client.post(
        path, data=data, base_url=IDP, headers={"Referer": f"{IDP}{token_from or path}"}
    )


def sign_in(client, username="alice", password=PASSWORD):
    r = _post(client, "/login", {"username": username, "password": password})
    assert r.status_code in (302, 303), r.get_data(as_text=True)[:500]
    return r


def add_rule(app, host, path="/", groups=(), strength=None):
    with app.app_context():
        rule = rules.add(rules.check(host, path, list(groups), strength))
        db.session.commit()
        return rule.id


def fa_cookie(person, target="https://app.example.test/") -> str:
    """The forward-auth cookie the signed-in browser gets on its way back to `target`."""
    r = person.get(f"/forward-auth/login?rd={quote(target, safe='')}", base_url=IDP)
    assert r.status_code == 303 and r.headers["Location"] == target
    set_cookie = [h for h in r.headers.getlist("Set-Cookie") if h.startswith(cookie.NAME)]
    assert set_cookie, r.headers
    return set_cookie[0].split(";", 1)[0].split("=", 1)[1]


def ask(app, value=None, *, host="app.example.test", uri="/", nginx=False, **headers):
    """The proxy's subrequest, with the browser's cookie (if any) and nothing else of it."""
    proxy = app.test_client(use_cookies=False)
    sent = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": host, "X-Forwarded-Uri": uri}
    if value is not None:
        sent["Cookie"] = f"{cookie.NAME}={value}"
    sent.update(headers)
    sent = {k: v for k, v in sent.items() if v is not None}
    return proxy.get(
        "/forward-auth/nginx" if nginx else "/forward-auth", base_url=IDP, headers=sent
    )


def login_url(target: str, acr: str | None = None) -> str:
    extra = f"&acr={acr}" if acr else ""
    return f"{IDP}/forward-auth/login?rd={quote(target, safe='')}{extra}"


# -- the answers ------------------------------------------------------------------------------


def test_not_signed_in_redirects_to_sign_in_with_the_original_url(app, person):
    add_rule(app, "app.example.test")
    r = ask(app, uri="/wiki/Page?a=1&b=%20x")
    assert r.status_code == 302
    assert r.headers["Location"] == login_url("https://app.example.test/wiki/Page?a=1&b=%20x")


def test_nginx_mode_answers_401_with_the_sign_in_address(app, person):
    add_rule(app, "app.example.test")
    r = ask(app, host="app.example.test:8443", uri="/x", nginx=True)
    assert r.status_code == 401
    assert r.headers["Location"] == login_url("https://app.example.test:8443/x")


def test_sign_in_then_back_at_the_site_with_the_headers(app, person):
    add_rule(app, "app.example.test")
    target = "https://app.example.test/wiki?page=1"
    start = f"/forward-auth/login?rd={quote(target, safe='')}"
    r = person.get(start, base_url=IDP)
    assert r.status_code == 303
    assert urlsplit(r.headers["Location"]).path == "/login"
    assert parse_qs(urlsplit(r.headers["Location"]).query)["next"] == [start]
    sign_in(person)
    r = person.get(start, base_url=IDP)
    assert r.status_code == 303 and r.headers["Location"] == target
    (set_cookie,) = [h for h in r.headers.getlist("Set-Cookie") if h.startswith(cookie.NAME)]
    attributes = {a.strip().split("=")[0].lower(): a for a in set_cookie.split(";")[1:]}
    assert attributes["domain"].strip() == f"Domain={DOMAIN}"
    assert {"secure", "httponly", "samesite", "path"} <= attributes.keys()
    assert attributes["samesite"].strip() == "SameSite=Lax"
    assert "expires" not in attributes and "max-age" not in attributes  # a browser session
    value = set_cookie.split(";", 1)[0].split("=", 1)[1]
    ok = ask(app, value, uri="/wiki?page=1")
    assert ok.status_code == 200
    assert ok.headers["Remote-User"] == "alice"
    assert ok.headers["Remote-Name"] == "Alice Liddell"
    assert ok.headers["Remote-Email"] == ""  # not verified yet
    assert ok.headers["Remote-Groups"] == ""
    assert ok.headers["Cache-Control"] == "no-store"


def test_verified_email_is_sent(app, person):
    add_rule(app, "app.example.test")
    with app.app_context():
        User.find("alice").email_verified = True
        db.session.commit()
    sign_in(person)
    assert ask(app, fa_cookie(person)).headers["Remote-Email"] == "Alice@Example.org"


def test_unknown_host_is_refused_even_signed_in(app, person):
    add_rule(app, "app.example.test")
    sign_in(person)
    value = fa_cookie(person, "https://other.example.test/")
    r = ask(app, value, host="other.example.test")
    assert r.status_code == 403
    assert "No access rule" in r.get_data(as_text=True)
    assert ask(app, host="other.example.test").status_code == 403  # not signed in: the same


def test_group_rule_refuses_others_and_lets_members_pass(app, person):
    add_rule(app, "staff.example.test", groups=["Staff"])
    sign_in(person)
    value = fa_cookie(person, "https://staff.example.test/")
    r = ask(app, value, host="staff.example.test")
    assert r.status_code == 403
    assert "only for members of: Staff" in r.get_data(as_text=True)
    # Shown on the site's own host: the stylesheet is this service's, and allowed by the CSP.
    assert f'href="{IDP}/static/idp.css"' in r.get_data(as_text=True)
    assert f"style-src {IDP};" in r.headers["Content-Security-Policy"]
    with app.app_context():
        User.find("alice").groups = ["staff", "R&D, Europe", "Zoë"]
        db.session.commit()
    r = ask(app, value, host="staff.example.test")
    assert r.status_code == 200
    assert r.headers["Remote-Groups"] == "staff,R&D%2C Europe,Zo%C3%AB"


def test_a_rule_asking_a_second_factor_sends_a_password_session_to_step_up(app, person):
    add_rule(app, "secure.example.test", strength="mfa")
    sign_in(person)
    value = fa_cookie(person, "https://secure.example.test/")
    r = ask(app, value, host="secure.example.test", uri="/a")
    assert r.status_code == 302
    assert r.headers["Location"] == login_url("https://secure.example.test/a", "mfa")
    start = urlsplit(r.headers["Location"])
    r = person.get(f"{start.path}?{start.query}", base_url=IDP)
    assert r.status_code == 303
    step = urlsplit(r.headers["Location"])
    assert step.path == "/login/step-up"
    assert parse_qs(step.query)["acr"] == ["mfa"]


def test_after_the_step_up_the_new_cookie_passes_the_rule(app, person):
    """The second factor asked through the same step-up as apps (identity.auth.step_up):
    back at /forward-auth/login, the cookie then carries the stronger sign-in."""
    add_rule(app, "secure.example.test", strength="mfa")
    sign_in(person)
    weak = fa_cookie(person, "https://secure.example.test/")
    secret, _codes = enrolled(app)
    asked = ask(app, weak, host="secure.example.test", uri="/a")
    start = urlsplit(asked.headers["Location"])
    step = person.get(f"{start.path}?{start.query}", base_url=IDP)
    r = person.get(step.headers["Location"], base_url=IDP)
    assert r.status_code == 303 and r.headers["Location"].endswith("/login/second-factor")
    r = _post(person, "/login/second-factor", {"code": now_code(secret, 1)})
    assert r.status_code in (302, 303), r.get_data(as_text=True)[:300]
    back = r.headers["Location"]
    assert back == f"{start.path}?{start.query}", back
    strong = fa_cookie(person, "https://secure.example.test/a")
    assert ask(app, strong, host="secure.example.test", uri="/a").status_code == 200
    # The weak one belonged to the session the step replaced.
    assert ask(app, weak, host="secure.example.test", uri="/a").status_code == 302


# -- the cookie is the server-side session -----------------------------------------------------


def test_sign_out_ends_the_cookie(app, person):
    add_rule(app, "app.example.test")
    sign_in(person)
    value = fa_cookie(person)
    assert ask(app, value).status_code == 200
    _post(person, "/logout", {}, token_from="/account")
    assert ask(app, value).status_code == 302


def _set_cookie_attributes(response) -> tuple[str, dict[str, str]]:
    """The value and attributes (lower-case names) of the forward-auth cookie's Set-Cookie."""
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(cookie.NAME)]
    first, *rest = header.split(";")
    attributes = {}
    for part in rest:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value
    return first.split("=", 1)[1], attributes


@pytest.mark.parametrize("way", ["logout", "end_session"])
def test_signing_out_deletes_the_cookie_in_the_browser(app, person, way):
    """Not only the server's session: the browser's cookie goes too, with the attributes it
    was set with (a Set-Cookie for another Domain, Path or without Secure deletes nothing)."""
    add_rule(app, "app.example.test")
    sign_in(person)
    issued = person.get(
        f"/forward-auth/login?rd={quote('https://app.example.test/', safe='')}", base_url=IDP
    )
    _, set_with = _set_cookie_attributes(issued)
    assert person.get_cookie(cookie.NAME, domain=DOMAIN) is not None
    if way == "logout":
        r = _post(person, "/logout", {}, token_from="/account")
    else:
        r = person.get("/end_session", base_url=IDP)
        r = _post(person, "/end_session", {}, token_from="/end_session")
    value, deleted_with = _set_cookie_attributes(r)
    assert value == ""
    assert deleted_with.pop("expires").startswith("Thu, 01 Jan 1970")
    assert deleted_with.pop("max-age") == "0"
    assert deleted_with == set_with
    # The browser's jar (the test client keeps one as a browser does) no longer holds it.
    assert person.get_cookie(cookie.NAME, domain=DOMAIN) is None


def test_ending_the_session_password_change_and_disabling_end_the_cookie(app, person):
    add_rule(app, "app.example.test")
    for end in ("session", "password", "disable"):
        client = app.test_client()
        sign_in(client)
        value = fa_cookie(client)
        assert ask(app, value).status_code == 200
        with app.app_context():
            user = User.find("alice")
            if end == "session":
                from identity.auth import sessions

                sessions.end(user, {s.sid for s in sessions.of_user(user)}, reason="test")
                db.session.commit()
            elif end == "password":
                accounts.set_password(user, "another long password here")
                db.session.commit()
                accounts.set_password(user, PASSWORD)
                db.session.commit()
            else:
                admin_accounts.disable(user, by="test")
                db.session.commit()
        assert ask(app, value).status_code == 302, end


def test_an_admin_second_factor_reset_ends_the_cookie(app, person):
    """The factors may be in someone else's hands: the sites behind the proxy sign out too."""
    add_rule(app, "app.example.test")
    secret, _ = enrolled(app)
    sign_in(person)
    r = _post(person, "/login/second-factor", {"code": now_code(secret, 1)})
    assert r.status_code == 303, r.get_data(as_text=True)[:500]
    value = fa_cookie(person)
    assert ask(app, value).status_code == 200
    with app.app_context():
        admin_accounts.reset_mfa(User.find("alice"), by="test")
    assert ask(app, value).status_code == 302


def test_forged_or_foreign_cookies_are_refused(app, person, database_url, tmp_path):
    add_rule(app, "app.example.test")
    sign_in(person)
    value = fa_cookie(person)
    payload, rest = value.split(".", 1)
    assert ask(app, payload + "." + rest[::-1]).status_code == 302
    assert ask(app, "x" * 5000).status_code == 302
    other = make_app(database_url, tmp_path, ISSUER=IDP, FORWARD_AUTH_COOKIE_DOMAIN=DOMAIN)
    with other.app_context():
        other_value = cookie._serializer().dumps({"sid": "s", "uid": 1, "ep": "e", "amr": []})
    close(other)
    assert ask(app, other_value).status_code == 302
    # The service's own session cookie is not a forward-auth cookie.
    session_cookie = person.get_cookie("__Host-session", domain="id.example.test")
    assert ask(app, session_cookie.value).status_code == 302


# -- rules and paths ----------------------------------------------------------------------------


def test_the_longest_prefix_decides_and_tricks_do_not_reach_a_stricter_path(app, person):
    add_rule(app, "app.example.test")
    add_rule(app, "app.example.test", "/admin", groups=["admins"])
    sign_in(person)
    value = fa_cookie(person)
    for uri in ("/", "/public/x", "/administrator", "/admins"):
        assert ask(app, value, uri=uri).status_code == 200, uri
    for uri in (
        "/admin",
        "/admin/",
        "/admin/users?x=1",
        "/ADMIN/users",
        "//admin",
        "/public/../admin",
        "/public/..%2Fadmin",
        "/public/%2e%2e/admin",
        "/public/%252e%252e/admin",
        "/public/..;/admin",
        "/admin;jsessionid=1",
        "/public\\..\\admin",
        "/%61dmin",
    ):
        assert ask(app, value, uri=uri).status_code == 403, uri


def test_canonical_paths():
    assert rules.canonical_path("/A/./b/../C?x=/admin#y") == "/a/c"
    assert rules.canonical_path("/../../etc") == "/etc"
    with pytest.raises(rules.BadPath):
        rules.canonical_path("/%ff")
    with pytest.raises(rules.BadPath):
        rules.canonical_path("/%0d%0a")
    with pytest.raises(rules.BadPath):
        rules.canonical_path("/%2525252e")


def test_rule_values_are_checked(app):
    with app.app_context():
        for host, path, groups, strength, field in (
            ("evil.test", "/", [], None, "host"),
            ("example.test.evil.test", "/", [], None, "host"),
            ("app.example.test:443", "/", [], None, "host"),
            ("ápp.example.test", "/", [], None, "host"),
            ("app.example.test", "admin", [], None, "path"),
            ("app.example.test", "/a b", [], None, "path"),
            ("app.example.test", "/a%2f", [], None, "path"),
            ("app.example.test", "/", ["ok", "bad\nname"], None, "groups"),
            ("app.example.test", "/", [], "high", "acr"),
        ):
            with pytest.raises(rules.RuleError) as e:
                rules.check(host, path, groups, strength)
            assert e.value.field == field, (host, path, groups, strength)
        wanted = rules.check("App.Example.Test.", "/docs//x/", [" a ", "A", ""], "any")
        assert (wanted.host, wanted.path_prefix, wanted.groups, wanted.acr) == (
            "app.example.test",
            "/docs/x",
            ["a"],
            None,
        )


# -- open redirects and header values --------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.test/",
        "http://app.example.test/",
        "//app.example.test/",
        "/account",
        "https://app.example.test@evil.test/",
        "https://evil.test\\.example.test/",
        "https://example.test.evil.test/",
        "https://app.example.test:99999/",
        "https://app.example.test/\r\nSet-Cookie: x=1",
        "https://app.example.test/\t/evil.test",
        "javascript:alert(1)//.example.test",
        "https://ápp.example.test/",
        "",
    ],
)
def test_only_sites_under_the_domain_are_return_addresses(app, person, target):
    sign_in(person)
    r = person.get(f"/forward-auth/login?rd={quote(target, safe='')}", base_url=IDP)
    assert r.status_code == 400
    assert "does not lead back" in r.get_data(as_text=True)
    assert not any(h.startswith(cookie.NAME) for h in r.headers.getlist("Set-Cookie"))


def test_header_values_hold_no_line_break_and_no_raw_non_ascii(app, person):
    add_rule(app, "app.example.test")
    with app.app_context():
        user = User.find("alice")
        user.name = "Zoë 50% \r\nX-Injected: 1\u2028李"
        user.groups = ["a\r\nb"]
        db.session.commit()
    sign_in(person)
    r = ask(app, fa_cookie(person))
    assert r.status_code == 200
    assert r.headers["Remote-Name"] == "Zo%C3%AB 50%25 %0D%0AX-Injected: 1%E2%80%A8%E6%9D%8E"
    assert r.headers["Remote-Groups"] == "a%0D%0Ab"
    assert "X-Injected" not in r.headers
    for name in ("Remote-User", "Remote-Email", "Remote-Name", "Remote-Groups"):
        assert re.fullmatch(r"[\x20-\x7e]*", r.headers[name])


# -- bad input and settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"X-Forwarded-Uri": None}, "must send X-Forwarded-Proto"),
        ({"X-Forwarded-Host": None}, "must send X-Forwarded-Proto"),
        ({"X-Forwarded-Proto": "http"}, "served over https"),
        ({"X-Forwarded-Host": "evil.test"}, "not a host name under example.test"),
        ({"X-Forwarded-Host": "a.example.test, b.example.test"}, "not a host name"),
        ({"X-Forwarded-Host": "a.example.test:0"}, "not a host name"),
        ({"X-Forwarded-Uri": "no-slash"}, "must be a path"),
        ({"X-Forwarded-Uri": "/a b"}, "must be a path"),
        ({"X-Forwarded-Uri": "/" + "a" * 5000}, "must be a path"),
        ({"X-Forwarded-Uri": "/%ff"}, "not UTF-8"),
    ],
)
def test_bad_proxy_headers_get_a_message(app, headers, says):
    add_rule(app, "app.example.test")
    r = ask(app, **headers)
    assert r.status_code == 400
    assert says in r.get_data(as_text=True)
    r = ask(app, Accept="application/json", **headers)
    assert r.status_code == 400 and says in r.get_json()["error_description"]


def test_bad_acr_in_the_sign_in_link(app, person):
    sign_in(person)
    r = person.get("/forward-auth/login?rd=https%3A%2F%2Fapp.example.test%2F&acr=x", base_url=IDP)
    assert r.status_code == 400 and "unknown acr" in r.get_data(as_text=True)


def test_off_without_a_cookie_domain(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    client = app.test_client()
    try:
        for path in ("/forward-auth", "/forward-auth/nginx", "/forward-auth/login?rd=x"):
            r = client.get(path, base_url="https://idp.test")
            assert r.status_code == 404
            assert "IDP_FORWARD_AUTH_COOKIE_DOMAIN" in r.get_data(as_text=True)
    finally:
        close(app)


def close(app) -> None:
    """The database connections of an app built in a test (not the fixture's)."""
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize(
    ("domain", "issuer", "says"),
    [
        ("localhost", IDP, "must be a domain name"),
        ("127.0.0.1", IDP, "must be a domain name"),
        ("exa mple.test", IDP, "must be a domain name"),
        ("example.test", "https://idp.other.test", "must contain this service's own host"),
    ],
)
def test_cookie_domain_setting_is_checked(database_url, tmp_path, domain, issuer, says):
    with pytest.raises(ConfigError, match=says):
        make_app(database_url, tmp_path, ISSUER=issuer, FORWARD_AUTH_COOKIE_DOMAIN=domain)


def test_cookie_domain_setting_is_normalised(database_url, tmp_path):
    app = make_app(database_url, tmp_path, ISSUER=IDP, FORWARD_AUTH_COOKIE_DOMAIN=".Example.TEST")
    assert app.config["FORWARD_AUTH_COOKIE_DOMAIN"] == "example.test"
    close(app)


# -- command line and admin page ----------------------------------------------------------------


def test_cli_adds_lists_and_removes_rules(app):
    runner = app.test_cli_runner()
    r = runner.invoke(
        args=["forward-auth", "add", "wiki.example.test", "--group", "staff", "--acr", "mfa"]
    )
    assert r.exit_code == 0, r.output
    assert "rule #" in r.output and "staff; a second factor" in r.output
    r = runner.invoke(args=["forward-auth", "list", "--json"])
    assert '"host": "wiki.example.test"' in r.output and '"acr": "mfa"' in r.output
    rule_id = re.search(r'"id": (\d+)', r.output).group(1)
    r = runner.invoke(args=["forward-auth", "add", "wiki.example.test", "--path", "/"])
    assert r.exit_code == 1 and "has a rule already" in r.output
    for args, says in (
        (["add", "evil.test"], "Error: HOST: evil.test is not under example.test"),
        (["add", "a.example.test", "--path", "x"], "Error: --path: the path prefix must"),
        (["add", "a.example.test", "--acr", "high"], "Error: --acr: the strength must"),
        (["remove", "nope"], "Error: no rule 'nope'"),
        (["remove", "99999"], "Error: no rule '99999'"),
    ):
        r = runner.invoke(args=["forward-auth", *args])
        assert r.exit_code == 1 and says in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    r = runner.invoke(args=["forward-auth", "remove", rule_id])
    assert r.exit_code == 0 and "removed rule" in r.output
    assert "no rules" in runner.invoke(args=["forward-auth", "list"]).output


def test_admin_page_adds_and_removes_rules(app, person):
    with app.app_context():
        User.find("alice").is_admin = True
        db.session.commit()
    sign_in(person)
    page = person.get("/admin/forward-auth", base_url=IDP)
    assert page.status_code == 200 and "No rule yet" in page.get_data(as_text=True)
    rule = {"host": "wiki.example.test", "path": "/admin", "groups": "ops, dev", "acr": "phr"}
    r = _post(
        person, "/admin/forward-auth", {**rule, "host": "evil.test", "admin_password": PASSWORD}
    )
    assert r.status_code == 400
    assert "evil.test is not under example.test" in r.get_data(as_text=True)
    r = _post(person, "/admin/forward-auth", {**rule, "admin_password": "wrong"})
    assert r.status_code == 400 and "No rule yet" in r.get_data(as_text=True)
    r = _post(person, "/admin/forward-auth", {**rule, "admin_password": PASSWORD})
    assert r.status_code == 303
    add_rule(app, "wiki.example.test")
    page = person.get("/admin/forward-auth", base_url=IDP).get_data(as_text=True)
    assert "wiki.example.test/admin" in page and "ops, dev" in page and "a passkey" in page
    ids = re.findall(r"/admin/forward-auth/(\d+)/remove", page)
    assert len(ids) == 2
    admin_rule = ids[1]  # by host, then path: "/" first
    # The confirmation says what decides once the rule is gone.
    confirm_page = person.get(f"/admin/forward-auth/{admin_rule}/remove", base_url=IDP)
    text = confirm_page.get_data(as_text=True)
    assert "the rule for <code>wiki.example.test/</code> decides here: anyone signed in" in text
    path = f"/admin/forward-auth/{admin_rule}/remove"
    r = _post(person, path, {"admin_password": "wrong"})
    assert r.status_code == 400
    r = _post(person, path, {"admin_password": PASSWORD})
    assert r.status_code == 303
    page = person.get("/admin/forward-auth", base_url=IDP).get_data(as_text=True)
    assert "Rule removed: wiki.example.test/admin." in page
    assert "<code>wiki.example.test/admin</code>" not in page
    last = re.search(r"/admin/forward-auth/(\d+)/remove", page).group(1)
    text = person.get(f"/admin/forward-auth/{last}/remove", base_url=IDP).get_data(as_text=True)
    assert "nobody can reach <code>wiki.example.test/</code>" in text
    assert person.get(path, base_url=IDP).status_code == 404
    assert person.post(path, base_url=IDP).status_code in (400, 404)


def test_non_admins_cannot_manage_rules(app, person):
    sign_in(person)
    assert person.get("/admin/forward-auth", base_url=IDP).status_code == 403


NASTY = [
    "",
    " ",
    "%",
    "%zz",
    "%00",
    "%c0%af",
    "/%2e%2e%2f%2e%2e%2f",
    "\u00e9",
    "\u202e",
    "\ufeff/",
    "/" * 3000,
    "x" * 10_000,
    "https://app.example.test:/",
    "https://[::1]/",
    "https://app.example.test:65536/",
    "https://.example.test/",
    "https://app..example.test/",
    "https://-a.example.test/",
    "app.example.test:443:443",
    "[::1]:443",
    "\\\\evil.test",
]


def test_garbage_in_every_proxy_header_and_in_rd_never_breaks_the_service(app, person):
    add_rule(app, "app.example.test")
    sign_in(person)
    value = fa_cookie(person)
    for nasty in NASTY:
        for header in ("X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Uri", "Cookie"):
            sent = {header: nasty} if header != "Cookie" else {}
            r = ask(app, nasty if header == "Cookie" else value, **sent)
            assert r.status_code in (200, 302, 400, 403), (header, nasty[:40], r.status_code)
        r = person.get(f"/forward-auth/login?rd={quote(nasty, safe='')}", base_url=IDP)
        assert r.status_code == 400, (nasty[:40], r.status_code)
        r = person.get(
            f"/forward-auth/login?rd=https%3A%2F%2Fapp.example.test%2F&acr={quote(nasty)}",
            base_url=IDP,
        )
        assert r.status_code in (303, 400), (nasty[:40], r.status_code)


@pytest.mark.parametrize(
    "app_overrides",
    [
        {
            "ISSUER": IDP,
            "FORWARD_AUTH_COOKIE_DOMAIN": DOMAIN,
            "BRAND_NAME": "Acme Sign-in",
            "BRAND_ACCENT": "#7a1fa2",
            "BRAND_LOGO_URL": "https://cdn.acme.example/logo.svg",
        }
    ],
)
def test_the_refusal_page_wears_the_brand(app, person):
    """The page a proxy shows on a protected site's host is the service's own: its name and
    its accent stylesheet, addressed at the service (the site's host would not have it)."""
    add_rule(app, "staff.example.test", groups=["Staff"])
    sign_in(person)
    r = ask(app, fa_cookie(person, "https://staff.example.test/"), host="staff.example.test")
    page = r.get_data(as_text=True)
    assert r.status_code == 403
    assert "Acme Sign-in" in page and "Identity" not in page
    assert f'href="{IDP}/brand.css?v=' in page
    assert 'src="https://cdn.acme.example/logo.svg"' in page
    policy = r.headers["Content-Security-Policy"]
    assert f"img-src {IDP} https://cdn.acme.example;" in policy
