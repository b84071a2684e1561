"""An app that lets the IdP sign people in: Authlib's OpenID Connect client (authorization
code with PKCE), the person's claims on the home page, and signing out at both ends (the app
sends the person to the IdP's end_session_endpoint; the IdP tells the app, back-channel, when
a session ends there).

    DEMO_CLIENT_ID=… DEMO_CLIENT_SECRET=… python examples/flask_app/app.py

`make demo` registers it and runs it beside the IdP. Settings (environment):
DEMO_ISSUER (https://localhost:5000), DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_PORT (5001),
DEMO_CA_FILE (the IdP's local CA, certs/ca.pem).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, redirect, render_template, request, session
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

ROOT = Path(__file__).resolve().parents[2]
ISSUER = os.environ.get("DEMO_ISSUER", "https://localhost:5000").rstrip("/")
CLIENT_ID = os.environ.get("DEMO_CLIENT_ID", "")
CLIENT_SECRET = os.environ.get("DEMO_CLIENT_SECRET", "")
PORT = int(os.environ.get("DEMO_PORT", "5001"))
CA_FILE = os.environ.get("DEMO_CA_FILE") or str(ROOT / "certs" / "ca.pem")
# Registered at the IdP character for character: always this address, never the Host header.
BASE = f"http://127.0.0.1:{PORT}"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"

app = Flask(__name__)
app.secret_key = os.environ.get("DEMO_SECRET_KEY") or secrets.token_hex(32)
app.config.update(SESSION_COOKIE_NAME="demo_session", SESSION_COOKIE_SAMESITE="Lax")

oauth = OAuth(app)
oauth.register(
    "idp",
    client_id=CLIENT_ID,
    client_secret=CLIENT_SECRET,
    server_metadata_url=f"{ISSUER}/.well-known/openid-configuration",
    client_kwargs={
        "scope": "openid profile email",
        "code_challenge_method": "S256",
        # The IdP's certificate is signed by its local CA: verify against that file.
        # trust_env=False, because requests lets REQUESTS_CA_BUNDLE (and CURL_CA_BUNDLE)
        # override a session's `verify`.
        "verify": CA_FILE,
        "trust_env": False,
        "default_timeout": 10,
    },
)

# Sessions the IdP has ended (back-channel logout), by the IdP's session id (`sid`). In
# memory, for one process: a real app keeps them where all its workers see them.
ended_sids: set[str] = set()


@app.before_request
def checks():
    if request.method == "GET" and request.host != f"127.0.0.1:{PORT}":
        # Cookies belong to a host name: stay on the one the redirect URIs use.
        return redirect(BASE + request.full_path.rstrip("?"))
    if session.get("sid") in ended_sids:
        session.clear()
        session["notice"] = "The IdP ended your session (back-channel logout)."
    return None


@app.get("/")
def index():
    notice = session.pop("notice", None)
    if request.args.get("state"):
        # Back from the IdP's end_session_endpoint, with the state sent there.
        try:
            oauth.idp.validate_logout_response()
            notice = "You are signed out, here and at the IdP."
        except OAuthError:
            notice = "You are signed out here (the sign-out answer had an unknown state)."
    return render_template(
        "index.html",
        user=session.get("user"),
        userinfo=session.get("userinfo"),
        notice=notice,
        issuer=ISSUER,
        when=_when,
    )


@app.get("/login")
def login():
    return oauth.idp.authorize_redirect(BASE + "/callback")


@app.get("/callback")
def callback():
    # RFC 9207: the IdP names itself in the answer; refuse an answer from another one.
    if request.args.get("iss", ISSUER) != ISSUER:
        return _error("The answer came from another issuer.", request.args["iss"])
    try:
        token = oauth.idp.authorize_access_token()
        userinfo = oauth.idp.userinfo(token=token)
    except OAuthError as exc:
        return _error(exc.description or exc.error, exc.error)
    except JoseError as exc:
        return _error("The ID token is not valid.", exc.error)
    claims = dict(token["userinfo"])  # the ID token's claims, verified by Authlib
    session.clear()
    session["user"] = claims
    session["userinfo"] = dict(userinfo)  # what /userinfo said, with the access token
    session["id_token"] = token["id_token"]  # the id_token_hint when signing out
    session["sid"] = claims.get("sid")
    return redirect("/")


@app.post("/logout")
def logout():
    id_token = session.get("id_token")
    session.clear()
    if not id_token:
        return redirect("/")
    # To the IdP's end_session_endpoint; it ends its session and sends the browser back.
    return oauth.idp.logout_redirect(
        post_logout_redirect_uri=BASE + "/", id_token_hint=id_token, client_id=CLIENT_ID
    )


@app.post("/backchannel-logout")
def backchannel_logout():
    """OpenID Connect Back-Channel Logout 1.0: the IdP posts a signed logout token."""
    try:
        claims = verify_logout_token(request.form.get("logout_token", ""))
    except (JoseError, ValueError) as exc:
        app.logger.warning("refused a logout token: %s", exc)
        return {"error": "invalid_request"}, 400, {"Cache-Control": "no-store"}
    ended_sids.add(claims["sid"])
    app.logger.info("the IdP ended session %s of %s", claims["sid"], claims["sub"])
    return "", 200, {"Cache-Control": "no-store"}


def verify_logout_token(token: str) -> dict:
    """Signature (the IdP's published keys), iss, aud, iat, exp, the logout event, no
    nonce (section 2.6 of the spec)."""
    metadata = oauth.idp.load_server_metadata()
    supported = metadata["id_token_signing_alg_values_supported"]
    # Public-key algorithms only: never `none`, never an HMAC keyed with something public.
    registry = JWSRegistry(algorithms=[a for a in supported if a != "none" and a[:2] != "HS"])
    try:
        keys = KeySet.import_key_set(oauth.idp.fetch_jwk_set())
        decoded = jwt.decode(token, keys, registry=registry)
    except InvalidKeyIdError:  # a key published since: fetch the JWKS again, once
        keys = KeySet.import_key_set(oauth.idp.fetch_jwk_set(force=True))
        decoded = jwt.decode(token, keys, registry=registry)
    if decoded.header.get("typ", "logout+jwt") != "logout+jwt":
        raise ValueError("not a logout token (typ)")
    jwt.JWTClaimsRegistry(
        leeway=60,
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": CLIENT_ID},
        iat={"essential": True},
        exp={"essential": True},
        jti={"essential": True},
    ).validate(decoded.claims)
    claims = decoded.claims
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
        raise ValueError("no back-channel logout event")
    if "nonce" in claims:
        raise ValueError("a logout token has no nonce")
    if not isinstance(claims.get("sid"), str):
        raise ValueError("no sid: this app ends sessions by sid")
    return claims


def _error(message: str, detail: str):
    return render_template("index.html", error=message, detail=detail, issuer=ISSUER), 400


def _when(timestamp) -> str:
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


if __name__ == "__main__":
    if not CLIENT_ID or not CLIENT_SECRET:
        raise SystemExit("Set DEMO_CLIENT_ID and DEMO_CLIENT_SECRET (or run `make demo`).")
    app.run(host="127.0.0.1", port=PORT)
