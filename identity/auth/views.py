"""Signing in and out, registering, resetting a password: thin views (validate the form, call one
function, redirect)."""

from __future__ import annotations

import logging

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy.exc import IntegrityError

from identity import audit
from identity.auth import accounts, bp, password_check, reset, verification
from identity.auth.forms import (
    LoginForm,
    RegisterForm,
    ResetForm,
    ResetRequestForm,
)
from identity.auth.refusals import BACKEND_DOWN, DIRECTORY_MISCONFIGURED, SignInRefused
from identity.auth.signin import (
    enforce_session_lifetime,
    sign_in,
    sign_out,
)
from identity.connectors import ConnectorError
from identity.connectors.base import AccountProblem, DirectoryMisconfigured
from identity.connectors.local import identity_for
from identity.connectors.registry import registry
from identity.errors import render_error, wants_json
from identity.extensions import db
from identity.forms import PostForm
from identity.oidc import app_context
from identity.passwords import policy_errors
from identity.security import landing, safe_next
from identity.throttle import Refusal, client_ip, lock_facts, throttle, wait_text

log = logging.getLogger("identity.auth")

BAD_CREDENTIALS = "Wrong username or password."
# A setting is wrong: waiting will not help, the administrators must hear of it.
REGISTRATIONS_LIMITED = (
    "Too many accounts were created from this address. Wait {wait} and try again."
)
RESETS_LIMITED = "Too many password resets were asked from this address. Wait {wait} and try again."


bp.before_app_request(enforce_session_lifetime)


def _retry(wait: int) -> dict:
    return {"Retry-After": str(wait)}


def _after_sign_in(next_value: str | None):
    from identity.auth.mfa_views import next_page

    return redirect(next_page(next_value) or safe_next(next_value) or landing())


@bp.get("/")
def index():
    return redirect(url_for("auth.account" if current_user.is_authenticated else "auth.login"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if request.method == "GET":
        # reauth: an app asked for a fresh sign-in (prompt=login, max_age) or another person.
        if current_user.is_authenticated and not request.args.get("reauth"):
            return _after_sign_in(request.args.get("next"))
        form.next.data = safe_next(request.args.get("next")) or ""
        hint = request.args.get("login_hint", "")
        if hint and len(hint) <= 254 and hint.isprintable():
            form.username.data = hint  # OpenID Connect login_hint: who the app expects
        return _login_page(form)
    if not form.validate_on_submit():
        return _login_page(form, 400)
    # Locked: refused before any password check, known and unknown usernames alike. Else
    # this check holds its place in the lockout's count until it is over.
    refusal = throttle().signin_begin(form.username.data)
    if refusal:
        return _locked(form, refusal)

    identity, backend_down, fault = None, False, None
    # The account the name names decides which checks run (auth.password_check).
    user, checks = password_check.checks(form.username.data)
    for check in checks:
        try:
            identity = check.run(form.password.data)
        except AccountProblem as problem:
            throttle().signin_release(form.username.data)
            audit.record("signin.failure", user, method=check.connector, reason=problem.reason)
            db.session.commit()
            return _login_page(form, 403, problem.message)
        except DirectoryMisconfigured as exc:
            log.error("connector %s is misconfigured: %s", check.connector, exc)
            backend_down, fault = True, str(exc)
            continue
        except ConnectorError as exc:
            log.error("connector %s failed: %s", check.connector, exc)
            backend_down = True
            continue
        if identity is not None:
            break
    if identity is None:
        reason = "misconfigured" if fault else "backend_down" if backend_down else "bad_credentials"
        # A configuration fault's detail is for the admins (the overview shows the last one).
        detail = {"detail": fault[:500]} if fault else {}
        audit.record("signin.failure", user, method="password", reason=reason, **detail)
        # A directory outage is nobody's failure: only refused passwords count.
        if backend_down:
            throttle().signin_release(form.username.data)
            locked = []
        else:
            locked = throttle().signin_failed(form.username.data)
        for scope in locked:
            audit.record("signin.locked", user, **lock_facts(scope, form.username.data))
        db.session.commit()
        form.password.data = ""
        if backend_down:
            return _login_page(form, 503, DIRECTORY_MISCONFIGURED if fault else BACKEND_DOWN)
        return _login_page(form, 401, BAD_CREDENTIALS)
    throttle().signin_release(form.username.data)
    try:
        sign_in(identity, remember=form.remember.data)
    except SignInRefused as refused:
        return _login_page(form, refused.status, refused.message)
    return _after_sign_in(form.next.data)


def _locked(form: LoginForm, refusal: Refusal):
    """429 with Retry-After: the login page for people, the JSON error for programs."""
    headers = {"Retry-After": str(refusal.wait)}
    if wants_json():
        return render_error(429, refusal.message, headers)
    form.password.data = ""
    page, status = _login_page(form, 429, refusal.message)
    return page, status, headers


def _login_page(form: LoginForm, status: int = 200, error: str | None = None):
    return render_template(
        "auth/login.html",
        form=form,
        error=error,
        registration=current_app.config["REGISTRATION_ENABLED"],
        redirect_connectors=registry().redirect(),
        app=app_context.for_next(form.next.data),
    ), status


@bp.post("/logout")
def logout():
    form = PostForm()
    if not form.validate_on_submit():
        abort(400)
    if current_user.is_authenticated:
        audit.record("signout", current_user._get_current_object())
        db.session.commit()
    sign_out()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/register", methods=["GET", "POST"])
def register():
    if not current_app.config["REGISTRATION_ENABLED"]:
        abort(404)
    form = RegisterForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next")) or ""
        return render_template("auth/register.html", form=form)
    if not form.validate_on_submit():
        return render_template("auth/register.html", form=form), 400
    # Counted before the names are looked up: each attempt would be an account (and an
    # argon2 hash), and each answer that a name or address is taken tells who has an account
    # here or a place in the company directory (one directory search each). Only an attempt
    # refused for its password alone is given back.
    limits = throttle()
    wait = limits.use("registrations", client_ip())
    if wait:
        return render_error(429, REGISTRATIONS_LIMITED.format(wait=wait_text(wait)), _retry(wait))
    if not _register_checks(form):
        if not (form.username.errors or form.email.errors):
            limits.give_back("registrations", client_ip())
        return render_template("auth/register.html", form=form), 400
    try:
        user = accounts.create_local(form.username.data, form.email.data, form.password.data)
    except IntegrityError:
        # Lost a race with a registration of the same name or address.
        db.session.rollback()
        _register_checks(form)
        return render_template("auth/register.html", form=form), 400
    sign_in(identity_for(user))
    welcome = f"Welcome, {user.username}. Your account is ready."
    if verification.enabled():
        verification.send(user)
        welcome += f" To verify your e-mail address, open the link we sent to {user.email}."
    flash(welcome, "success")
    return _after_sign_in(form.next.data)


def _directory_has(form: RegisterForm) -> bool:
    """A directory person's name is theirs (auth.password_check.directory_has); when the
    directory cannot say, the name is not given away either."""
    try:
        return password_check.directory_has(form.username.data)
    except ConnectorError as exc:
        log.error("registration: the directory cannot check %r: %s", form.username.data, exc)
        form.username.errors.append(password_check.DIRECTORY_UNCHECKED)
        return False


def _register_checks(form: RegisterForm) -> bool:
    """Uniqueness and password policy; attaches messages to the fields."""
    ok = True
    if accounts.find(form.username.data, by_email=False) or _directory_has(form):
        form.username.errors.append("That username is taken. Choose another.")
    if form.username.errors:
        ok = False
    if accounts.email_taken(form.email.data):
        form.email.errors.append(
            "An account already uses this e-mail address. Sign in, or reset its password."
        )
        ok = False
    for message in policy_errors(form.password.data, form.username.data, form.email.data):
        form.password.errors.append(message)
        ok = False
    return ok


@bp.route("/reset", methods=["GET", "POST"])
def reset_request():
    form = ResetRequestForm()
    if request.method == "GET":
        return render_template("auth/reset_request.html", form=form)
    if not form.validate_on_submit():
        return render_template("auth/reset_request.html", form=form), 400
    # Per client address: says nothing about the address asked for.
    wait = throttle().use("reset-requests", client_ip())
    if wait:
        return render_error(429, RESETS_LIMITED.format(wait=wait_text(wait)), _retry(wait))
    reset.request_reset(form.email.data)
    return render_template("auth/reset_sent.html", email=form.email.data)


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    found, problem = reset.lookup(token)
    if problem:
        return render_template("auth/reset_invalid.html", message=problem), 400
    form = ResetForm()
    if request.method == "GET":
        return render_template("auth/reset_form.html", form=form, token=token)
    user = found.user
    ok = form.validate_on_submit()
    if ok:
        for message in policy_errors(form.password.data, user.username, user.email):
            form.password.errors.append(message)
            ok = False
    if not ok:
        return render_template("auth/reset_form.html", form=form, token=token), 400
    problem = reset.complete(found, form.password.data)
    if problem:
        return render_template("auth/reset_invalid.html", message=problem), 400
    flash("Your password is changed. Sign in with the new one.", "success")
    return redirect(url_for("auth.login"))
