"""The endpoints: /forward-auth (Caddy, Traefik: 302 to sign in), /forward-auth/nginx (nginx
auth_request: 401 with the sign-in address in Location), and /forward-auth/login, where a
signed-in browser gets the domain's cookie and goes back to the site."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import current_app, redirect, render_template, request, session, url_for
from flask_login import current_user

from identity import acr, audit
from identity.connectors import ConnectorError
from identity.errors import render_error, wants_json
from identity.extensions import db
from identity.forward_auth import bp, cookie, directory, forwarded, headers, rules
from identity.settings.brand import image_origin

OFF = "Forward authentication is off: set IDP_FORWARD_AUTH_COOKIE_DOMAIN."
NO_RULE = "No access rule lets anyone reach {host}{path} through this service."
NOT_ALLOWED = (
    "You are signed in as {user}, but this site ({host}) is only for members of: {groups}. "
    "Ask an administrator for access, or sign in with another account."
)
DIRECTORY_DOWN = (
    "The company directory cannot be reached to confirm your account, so this site cannot be "
    "opened now. Try again in a few minutes."
)
BAD_RETURN = (
    "This sign-in link does not lead back to a site protected by this service "
    "(https, under {domain})."
)


def _off():
    return render_error(404, OFF)


@bp.get("/forward-auth", endpoint="check")
def check():
    """For Caddy's forward_auth and Traefik's ForwardAuth: 200 with the Remote-* headers, 302
    to sign in (the proxy hands it to the browser), 403 when signed in but not allowed."""
    return _decide(redirect_to_login=True)


@bp.get("/forward-auth/nginx", endpoint="check_nginx")
def check_nginx():
    """For nginx's auth_request, which passes on only 2xx, 401 and 403: 401 with the sign-in
    address in Location (nginx's error_page sends the browser there)."""
    return _decide(redirect_to_login=False)


def _decide(*, redirect_to_login: bool):
    if not current_app.config["FORWARD_AUTH_COOKIE_DOMAIN"]:
        return _off()
    try:
        asked = forwarded.original()
        path = rules.canonical_path(asked.uri)
    except (forwarded.BadRequest, rules.BadPath) as problem:
        return render_error(400, f"Forward authentication: {problem}")
    rule = rules.deciding(asked.host, path)
    if rule is None:
        return _forbidden(NO_RULE.format(host=asked.host, path=path))
    who = cookie.read()
    if who is not None and directory.due(who[0]):
        try:
            allowed = directory.still_allowed(who[0].id)
        except ConnectorError:
            return _refused(503, "Service unavailable", DIRECTORY_DOWN)
        who = cookie.read() if allowed else None  # as the directory says now
    if who is None:
        return _to_login(asked, None, redirect_to_login)
    user, amr = who
    if not rules.in_groups(rule, user):
        return _forbidden(
            NOT_ALLOWED.format(user=user.username, host=asked.host, groups=", ".join(rule.groups))
        )
    if not acr.meets(amr, rule.acr):
        return _to_login(asked, rule.acr, redirect_to_login)
    return "", 200, {**headers.of(user), "Cache-Control": "no-store"}


def _forbidden(message: str):
    return _refused(403, "Forbidden", message)


def _refused(code: int, title: str, message: str):
    """403 or 503, as a page that Caddy and Traefik show on the site's own host: its
    stylesheet and links are this service's (absolute), and its CSP allows just that
    stylesheet."""
    if wants_json():
        return render_error(code, message)
    issuer = current_app.config["ISSUER"]
    page = render_template(
        "forward_auth/refused.html", code=code, title=title, message=message, issuer=issuer
    )
    images = issuer
    logo = current_app.config.get("BRAND_LOGO_URL")
    if logo and logo[0] != "/":  # the brand's logo, from its own origin
        images += " " + image_origin(logo, "IDP_BRAND_LOGO_URL")
    policy = (
        f"default-src 'none'; style-src {issuer}; img-src {images}; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    return page, code, {"Content-Security-Policy": policy}


def _to_login(asked: forwarded.Original, needed: str | None, redirect_to_login: bool):
    query = {"rd": asked.url, **({"acr": needed} if needed else {})}
    login = f"{current_app.config['ISSUER']}{url_for('forward_auth.login')}?{urlencode(query)}"
    if redirect_to_login:
        return redirect(login, 302)
    return render_error(401, "Sign in first.", headers={"Location": login})


@bp.get("/forward-auth/login", endpoint="login")
def login():
    """Signed in (and strongly enough): the domain's cookie, and back to `rd`. Otherwise the
    sign-in page, or the missing step, first; they come back here."""
    domain = current_app.config["FORWARD_AUTH_COOKIE_DOMAIN"]
    if not domain:
        return _off()
    target = forwarded.return_address(request.args.get("rd"))
    if target is None:
        return render_error(400, BAD_RETURN.format(domain=domain))
    wanted = request.args.get("acr") or None
    if wanted is not None and wanted not in acr.REQUIRABLE:
        return render_error(400, "This sign-in link is not valid: unknown acr.")
    here = request.full_path.rstrip("?")
    if not current_user.is_authenticated or not session.get("sid"):
        return redirect(url_for("auth.login", next=here), 303)
    if not acr.meets(session.get("amr"), wanted):
        return redirect(url_for("auth.step_up", acr=wanted, next=here), 303)
    response = redirect(target, 303)
    user = current_user._get_current_object()
    cookie.issue(response, user)
    audit.record("forward_auth.cookie", user, site=target.split("/", 3)[2])
    db.session.commit()
    return response
