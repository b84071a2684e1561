"""Branding: IDP_BRAND_NAME, IDP_BRAND_LOGO_URL and IDP_BRAND_ACCENT checked at start, shown on
every page, in /brand.css (readable in light and dark mode) and in every e-mail."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from test_config import GOOD_KEY, ROOT, build

from config import ConfigError
from conftest import PASSWORD, Browser, dispose, https_client, make_app
from identity import brand
from identity.auth import accounts, mfa
from identity.models import TotpFactor

LOGO = "https://cdn.acme.example/logo.svg"


def fresh_app(database_url, tmp_path, **settings):
    """Another app on the test database, its tables created (dispose() it after)."""
    from identity.extensions import db as _db

    app = make_app(database_url, tmp_path, **settings)
    with app.app_context():
        _db.create_all()
    return app


# -- settings -------------------------------------------------------------------------------


def test_defaults_are_the_plain_identity_brand(tmp_path, monkeypatch):
    cfg = build(tmp_path, monkeypatch).config
    assert (cfg["BRAND_NAME"], cfg["BRAND_LOGO_URL"], cfg["BRAND_ACCENT"]) == (
        "Identity",
        None,
        None,
    )


def test_values_from_the_environment_are_normalised(tmp_path, monkeypatch):
    cfg = build(
        tmp_path,
        monkeypatch,
        BRAND_NAME="  Acme Corp ",
        BRAND_ACCENT="#2F6",
        BRAND_LOGO_URL="/static/favicon.svg",
    ).config
    assert cfg["BRAND_NAME"] == "Acme Corp"
    assert cfg["BRAND_ACCENT"] == "#22ff66"
    assert cfg["BRAND_LOGO_URL"] == "/static/favicon.svg"
    # A number read as JSON is still a name.
    assert build(tmp_path, monkeypatch, BRAND_NAME="42").config["BRAND_NAME"] == "42"


@pytest.mark.parametrize(
    "value",
    [
        "red",
        "2f6fed",
        "#2f6fe",
        "#2f6fedff",
        "#gggggg",
        "#2f6fed;} body { display: none",
        "#fff url(https://evil.example/x)",
        "var(--x)",
        "true",
        "123456",
    ],
)
def test_a_bad_accent_is_refused_at_start(tmp_path, monkeypatch, value):
    with pytest.raises(ConfigError, match=r"^IDP_BRAND_ACCENT must be a hex colour such as"):
        build(tmp_path, monkeypatch, BRAND_ACCENT=value)


@pytest.mark.parametrize(
    "value",
    [
        "http://cdn.acme.example/logo.svg",
        "javascript:alert(1)",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "ftp://cdn.acme.example/logo.svg",
        "//cdn.acme.example/logo.svg",
        "logo.svg",
        "/logo.svg",
        "/static/../config.py",
        "/static//etc/passwd",
        "/static/a logo.svg",
        "https://user:pw@cdn.acme.example/logo.svg",
        'https://cdn.acme.example/logo.svg"><script>',
        "https://cdn.acme.example;script-src *;/logo.svg",
        "https://cdn.acme.example:70000/logo.svg",
        "https:///logo.svg",
    ],
)
def test_a_logo_of_another_scheme_or_shape_is_refused_at_start(tmp_path, monkeypatch, value):
    with pytest.raises(ConfigError, match=r"^IDP_BRAND_LOGO_URL must be an https:// URL or a"):
        build(tmp_path, monkeypatch, BRAND_LOGO_URL=value)


def test_a_static_logo_must_exist(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^IDP_BRAND_LOGO_URL: there is no file /static/no"):
        build(tmp_path, monkeypatch, BRAND_LOGO_URL="/static/no-such-logo.svg")


@pytest.mark.parametrize(
    "value", ["", "   ", "x" * 61, "Acme\r\nBcc: all@example.org", "Acme\u202eemcA", "A\u200bB"]
)
def test_a_bad_name_is_refused_at_start(tmp_path, monkeypatch, value):
    with pytest.raises(ConfigError, match=r"^IDP_BRAND_NAME must be"):
        build(tmp_path, monkeypatch, BRAND_NAME=value)


def test_a_bad_brand_setting_stops_the_service_with_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(IDP_SECRET_KEY=GOOD_KEY, IDP_BRAND_ACCENT="tomato")
    r = subprocess.run(
        [sys.executable, "-c", "import idp"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "idp: configuration error: IDP_BRAND_ACCENT must be a hex colour such as #2f6fed, "
        "not 'tomato'"
    ]


# -- pages ----------------------------------------------------------------------------------


@pytest.fixture
def branded(database_url, tmp_path):
    app = fresh_app(
        database_url,
        tmp_path,
        BRAND_NAME="Acme <Corp> & Co",
        BRAND_LOGO_URL=LOGO,
        BRAND_ACCENT="#ffcc00",
    )
    yield app
    dispose(app)


def test_every_page_carries_the_name_logo_and_stylesheet(branded):
    client = https_client(branded)
    for path, status in (("/login", 200), ("/register", 200), ("/reset", 200), ("/nope", 404)):
        r = client.get(path)
        page = r.get_data(as_text=True)
        assert r.status_code == status, path
        # Escaped as text, never markup.
        assert re.search(r"<title>[^<]* · Acme &lt;Corp&gt; &amp; Co</title>", page), path
        assert "<span>Acme &lt;Corp&gt; &amp; Co</span></a>" in page, path
        assert f'<img class="brand-logo" src="{LOGO}" alt=""' in page, path
        assert re.search(r'<link rel="stylesheet" href="/brand\.css\?v=[0-9a-f]{16}">', page)
        assert "Identity" not in page.replace("identity", ""), path
        csp = r.headers["Content-Security-Policy"]
        assert "img-src 'self' data: https://cdn.acme.example;" in csp, path
        assert "style-src 'self';" in csp


def test_a_static_logo_needs_no_other_image_origin(database_url, tmp_path):
    app = fresh_app(database_url, tmp_path, BRAND_LOGO_URL="/static/favicon.svg")
    r = https_client(app).get("/login")
    dispose(app)
    assert '<img class="brand-logo" src="/static/favicon.svg"' in r.get_data(as_text=True)
    assert "img-src 'self' data:;" in r.headers["Content-Security-Policy"]
    assert "/brand.css" not in r.get_data(as_text=True)  # no accent, no stylesheet


def test_the_default_brand_has_no_stylesheet_to_fetch(client):
    page = client.get("/login").get_data(as_text=True)
    assert "<title>Sign in · Identity</title>" in page and "brand.css" not in page
    assert client.get("/brand.css").status_code == 404


def test_the_stylesheet_is_cached_by_its_digest_and_revalidated_otherwise(branded):
    client = https_client(branded)
    href = re.search(r'href="(/brand\.css\?v=[0-9a-f]{16})"', client.get("/login").text).group(1)
    r = client.get(href)
    assert r.status_code == 200 and r.mimetype == "text/css"
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = r.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")  # a strong validator
    assert etag.strip('"') == href.rsplit("=", 1)[1]
    stale = client.get("/brand.css?v=0000000000000000")
    assert "immutable" not in stale.headers["Cache-Control"]
    assert "no-cache" in stale.headers["Cache-Control"]
    again = client.get("/brand.css", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""


@pytest.mark.parametrize(
    "accent", ["#ffcc00", "#2f6fed", "#000000", "#ffffff", "#777777", "#1f5fbf", "#e91e63"]
)
def test_accents_are_adjusted_to_read_in_light_and_dark_mode(accent):
    css = brand.stylesheet(accent)
    (light, light_fg), (dark, dark_fg) = re.findall(
        r"--accent: (#[0-9a-f]{6}); --accent-fg: (#[0-9a-f]{6});", css
    )
    # Links in the accent on the page's backgrounds, and text on accent-coloured buttons.
    for background in ("#ffffff", brand.LIGHT_BACKGROUND):
        assert brand.contrast(light, background) >= 4.5, (accent, light, background)
    for background in ("#14171b", brand.DARK_BACKGROUND):
        assert brand.contrast(dark, background) >= 4.5, (accent, dark, background)
    assert brand.contrast(light, light_fg) >= 4.5
    assert brand.contrast(dark, dark_fg) >= 4.5
    assert "@media (prefers-color-scheme: dark)" in css


def test_a_readable_accent_is_kept_as_given():
    assert brand.readable("#1f5fbf", brand.LIGHT_BACKGROUND) == "#1f5fbf"
    assert brand.readable("#ffcc00", brand.DARK_BACKGROUND) == "#ffcc00"


# -- e-mails --------------------------------------------------------------------------------


@pytest.fixture
def mailing(database_url, tmp_path, smtp):
    controller, inbox = smtp
    app = fresh_app(
        database_url,
        tmp_path,
        BRAND_NAME="Acme Corp",
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=controller.port,
        MAIL_USE_STARTTLS=False,
    )
    from identity.extensions import db

    with app.app_context():
        db.create_all()
        accounts.create_local("alice", "alice@example.org", PASSWORD)
    yield app, inbox
    dispose(app)


def body_of(message) -> str:
    return message.get_payload(decode=True).decode().replace("\r\n", "\n")


def test_reset_mail_is_branded(mailing):
    app, inbox = mailing
    Browser(https_client(app)).post("/reset", {"email": "alice@example.org"})
    (message,) = inbox.wait(1)
    assert message["Subject"] == "Acme Corp: Reset your password"
    body = body_of(message)
    assert "password of your Acme Corp account" in body
    assert body.rstrip().endswith("-- \nAcme Corp\nhttps://idp.test")


def test_verification_mail_is_branded(mailing):
    app, inbox = mailing
    from identity.auth import verification
    from identity.extensions import db

    with app.test_request_context():
        verification.send(accounts.find("alice")).result(10)
        db.session.commit()
    (message,) = inbox.wait(1)
    assert message["Subject"] == "Acme Corp: Verify your e-mail address"
    assert "is your address at Acme Corp" in body_of(message)
    assert "-- \nAcme Corp\n" in body_of(message)


def test_admin_mails_are_branded(mailing):
    """The second-factor reset notice and the reset link an administrator sends."""
    app, inbox = mailing
    from identity.admin import accounts as admin_accounts
    from identity.extensions import db

    with app.app_context():
        alice = accounts.find("alice")
        db.session.add(TotpFactor(user_id=alice.id, secret=mfa.seal(mfa.new_secret()), last_step=0))
        db.session.commit()
        admin_accounts.reset_mfa(alice, by="root").result(10)
        admin_accounts.send_reset_link(alice, by="root").result(10)
    first, second = inbox.wait(2)
    assert first["Subject"] == "Acme Corp: Your second factor was reset"
    assert "your account at Acme Corp (https://idp.test)" in body_of(first)
    assert second["Subject"] == "Acme Corp: Choose a new password"
    assert "new password for your Acme Corp account" in body_of(second)
    assert all("-- \nAcme Corp\nhttps://idp.test" in body_of(m) for m in (first, second))


def test_each_sign_in_buttons_text_meets_wcag_aa_contrast():
    """The providers' buttons (identity/static/idp.css) keep their brand colours, and their
    label text still reads at 4.5:1 or more (WCAG 2 AA for normal text)."""
    from pathlib import Path

    css = (Path(brand.__file__).parent / "static" / "idp.css").read_text()
    rules = re.findall(
        r"\.provider-(\w+) \{ background: (#[0-9a-f]{3,6}); color: (#[0-9a-f]{3,6});", css
    )
    assert {name for name, _, _ in rules} == {"google", "facebook", "twitter", "github"}

    def six(colour: str) -> str:  # #fff → #ffffff
        return colour if len(colour) == 7 else "#" + "".join(c * 2 for c in colour[1:])

    for name, background, text in rules:
        assert brand.contrast(six(text), six(background)) >= 4.5, (name, background, text)
