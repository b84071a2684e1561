"""Safe redirects and the security headers every response carries."""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from flask import Flask, Response, g, request
from flask.sessions import SecureCookieSessionInterface

# Raw control characters are refused anywhere in `next`; in its path also whitespace and
# backslashes, which browsers and Werkzeug turn into "/" ("/\t/evil" becomes "//evil").
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_IN_PATH = re.compile(r"[\x00-\x20\x7f-\x9f\\]")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def safe_next(target: str | None) -> str | None:
    """`target` as a path on this site, or None when it could leave it.

    Rejects absolute and scheme-relative URLs, backslashes, control characters, and the same
    tricks percent-encoded in the path (decoded repeatedly until it no longer changes).
    """
    if not target or len(target) > 2048 or _CONTROL.search(target):
        return None
    if urlsplit(target).scheme:
        return None
    # The raw path, not urlsplit's: it reads "///evil" as an empty host and path "/evil".
    path = re.split(r"[?#]", target, maxsplit=1)[0]
    for _ in range(5):
        if not path.startswith("/") or path.startswith("//") or _UNSAFE_IN_PATH.search(path):
            return None
        decoded = unquote(path)
        if decoded == path:
            return target
        path = decoded
    return None  # still changing after five rounds of decoding: refuse rather than guess


def landing() -> str:
    """Where a person who just signed in goes when no `next` says where: an administrator
    to the admin console, anyone else to their account page."""
    from flask import url_for
    from flask_login import current_user

    admin = current_user.is_authenticated and current_user.is_administrator
    return url_for("admin.home" if admin else "auth.account")


HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # same-origin keeps Flask-WTF's HTTPS Referer check working and leaks nothing outside.
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building the signer for requests that carry
    no session cookie (apps calling /token and /userinfo): ~12% of a bare request."""

    def open_session(self, app: Flask, request):
        if app.config["SESSION_COOKIE_NAME"] not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def allow_images_from(origin: str) -> None:
    """Let this response's page show images from `origin` (https://host[:port], checked by
    identity.settings.brand.image_origin): an app's logo on the pages of its sign-in."""
    g.setdefault("csp_image_origins", set()).add(origin)


def _csp(base_images: tuple[str, ...]) -> str:
    extra = tuple(sorted(g.get("csp_image_origins", ())))
    images = " ".join(dict.fromkeys(base_images + extra))
    if not images:
        return CSP
    return CSP.replace("img-src 'self' data:;", f"img-src 'self' data: {images};")


def install_headers(app: Flask) -> None:
    """Add the security headers to every response. The Content-Security-Policy admits
    images from the brand logo's origin (IDP_BRAND_LOGO_URL) and the origins a view allowed
    with allow_images_from, and from nowhere else outside this service."""
    from identity.settings.brand import image_origin

    hsts = f"max-age={app.config['HSTS_MAX_AGE']}" if app.config["HSTS_MAX_AGE"] else None
    logo = app.config.get("BRAND_LOGO_URL")
    base_images = (image_origin(logo, "IDP_BRAND_LOGO_URL"),) if logo and logo[0] != "/" else ()

    @app.after_request
    def _headers(response: Response) -> Response:
        h = response.headers
        present = {name.lower() for name, _ in h.items()}
        if "content-security-policy" not in present:
            h.add("Content-Security-Policy", _csp(base_images))
        for name, value in HEADERS:
            if name.lower() not in present:
                h.add(name, value)
        if request.is_secure and hsts and "strict-transport-security" not in present:
            h.add("Strict-Transport-Security", hsts)
        if request.endpoint != "static" and "cache-control" not in present:
            # Pages about accounts must not linger in shared caches or the back button.
            h.add("Cache-Control", "no-store")
        return response


NOT_UTF8 = "The form contained text that is not valid UTF-8. Retype it and send it again."


def install_utf8_check(app: Flask) -> None:
    """Refuse URL-encoded bodies that are not UTF-8: Werkzeug would otherwise keep "%FF"
    literally or drop the field, silently changing what the person typed."""
    from identity.errors import render_error

    @app.before_request
    def _utf8_only():
        if request.method != "POST" or request.mimetype != "application/x-www-form-urlencoded":
            return None
        body = request.get_data(cache=True)
        if body.isascii() and b"%" not in body:
            return None  # nothing encoded: ASCII as it stands (an app's token request)
        try:
            # Whole: the separators are ASCII, which never occurs inside a UTF-8 sequence.
            unquote_to_bytes(body.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return render_error(400, NOT_UTF8)
        return None
