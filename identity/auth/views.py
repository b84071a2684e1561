"""Thin views: validate the form, call one function, redirect."""

from __future__ import annotations

import logging

from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required
from sqlalchemy.exc import IntegrityError

from identity import audit
from identity.auth import accounts, bp, reset, signin, verification
from identity.auth.forms import (
    ChangePasswordForm,
    LoginForm,
    PostForm,
    RegisterForm,
    ResetForm,
    ResetRequestForm,
)
from identity.auth.signin import (
    BACKEND_DOWN,
    SignInRefused,
    enforce_session_lifetime,
    keep_this_session,
    sign_in,
    sign_out,
)
from identity.connectors import ConnectorError
from identity.connectors.base import DirectoryMisconfigured
from identity.connectors.ldap_answers import AccountProblem
from identity.connectors.local import identity_for
from identity.connectors.social import LINK_KEY as SOCIAL_LINK_KEY
from identity.errors import render_error, wants_json
from identity.extensions import db
from identity.models import User
from identity.names import fold
from identity.oidc.account_apps import apps_with_access
from identity.oidc.logout import end_other_sessions
from identity.passwords import policy_errors
from identity.security import landing, safe_next
from identity.throttle import Refusal, client_ip, throttle, wait_text

log = logging.getLogger("identity.auth")

LABELS = {
    "local": "Password",
    "ldap": "Company directory",
    "facebook": "Facebook",
    "google": "Google",
    "twitter": "X",
    "passkey": "Passkey",
}
BAD_CREDENTIALS = "Wrong username or password."


def labels() -> dict[str, str]:
    """LABELS and each configured redirect connector's own (upstream OpenID providers)."""
    return {
        **LABELS,
        **{c.name: c.label for c in current_app.extensions["idp.redirect_connectors"]},
    }


# A setting is wrong: waiting will not help, the administrators must hear of it.
MISCONFIGURED = (
    "Sign-in with the company directory is misconfigured on this service, so directory "
    "accounts cannot sign in. Please tell your administrators: trying again will not help "
    "until they fix it."
)
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
    for connector in current_app.extensions["idp.password_connectors"]:
        try:
            identity = connector.authenticate(form.username.data, form.password.data)
        except AccountProblem as problem:
            throttle().signin_release(form.username.data)
            audit.record(
                "signin.failure",
                accounts.find(form.username.data),
                method=connector.name,
                reason=problem.reason,
            )
            db.session.commit()
            return _login_page(form, 403, problem.message)
        except DirectoryMisconfigured as exc:
            log.error("connector %s is misconfigured: %s", connector.name, exc)
            backend_down, fault = True, str(exc)
            continue
        except ConnectorError as exc:
            log.error("connector %s failed: %s", connector.name, exc)
            backend_down = True
            continue
        if identity is not None:
            break
    if identity is None:
        reason = "misconfigured" if fault else "backend_down" if backend_down else "bad_credentials"
        user = accounts.find(form.username.data)
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
            audit.record("signin.locked", user, **_lock_facts(scope, form.username.data))
        db.session.commit()
        form.password.data = ""
        if backend_down:
            return _login_page(form, 503, MISCONFIGURED if fault else BACKEND_DOWN)
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


def _lock_facts(scope: str, username: str) -> dict:
    cfg = current_app.config
    facts = {
        "reason": f"{scope}_failures",
        "failures": cfg[f"LOCKOUT_{scope.upper()}_FAILURES"],
        "window": cfg["LOCKOUT_WINDOW"],
        "duration": cfg["LOCKOUT_DURATION"],
    }
    if scope == "account":
        facts["username"] = fold(username)  # as typed: it need not be an account
    return facts


def _login_page(form: LoginForm, status: int = 200, error: str | None = None):
    return render_template(
        "auth/login.html",
        form=form,
        error=error,
        registration=current_app.config["REGISTRATION_ENABLED"],
        redirect_connectors=current_app.extensions["idp.redirect_connectors"],
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
    if not form.validate_on_submit() or not _register_checks(form):
        return render_template("auth/register.html", form=form), 400
    # Counted once the form is good: each would be an account (and an argon2 hash).
    wait = throttle().use("registrations", client_ip())
    if wait:
        return render_error(429, REGISTRATIONS_LIMITED.format(wait=wait_text(wait)), _retry(wait))
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


def _register_checks(form: RegisterForm) -> bool:
    """Uniqueness and password policy; attaches messages to the fields."""
    ok = True
    if accounts.find(form.username.data, by_email=False):
        form.username.errors.append("That username is taken. Choose another.")
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


@bp.get("/account")
@login_required
def account():
    return _account_page(ChangePasswordForm())


def _account_page(password_form: ChangePasswordForm):
    from identity.auth import remember
    from identity.auth.devices import listing
    from identity.auth.mfa_views import mfa_summary

    user: User = current_user._get_current_object()
    linked = {link.connector for link in user.links}
    connectable = [
        c for c in current_app.extensions["idp.redirect_connectors"] if c.name not in linked
    ]
    return render_template(
        "auth/account.html",
        mfa=mfa_summary(user),
        password_form=password_form,
        post_form=PostForm(),
        labels=labels(),
        connectable=connectable,
        social=current_app.extensions["idp.social_connectors"],
        can_disconnect=len(user.links) > 1,
        apps=apps_with_access(user),
        devices=listing(user, sid=session.get("sid"), series=remember.presented_series()),
    )


@bp.post("/account/verify-email")
@login_required
def resend_verification():
    """Mail a new link to verify the account's address, a few times an hour at most."""
    form = PostForm()
    if not form.validate_on_submit():
        abort(400)
    user: User = current_user._get_current_object()
    if not verification.enabled() or not user.email:
        abort(404)
    if user.email_verified:
        flash(f"{user.email} is already verified.", "info")
        return redirect(url_for("auth.account"))
    wait = verification.wait_before_sending(user)
    if wait:
        minutes = -(-wait // 60)
        flash(
            f"Several links were sent to {user.email} in the last hour. Check your inbox and "
            f"spam folder, or ask again in {minutes} minute{'s' if minutes > 1 else ''}.",
            "error",
        )
        return _account_page(ChangePasswordForm()), 429, {"Retry-After": str(wait)}
    verification.send(user)
    flash(f"A link to verify your address is on its way to {user.email}.", "success")
    return redirect(url_for("auth.account"))


@bp.route("/verify-email/<token>", methods=["GET", "POST"])
def verify_email(token: str):
    """GET asks to confirm, POST verifies: a mail scanner that fetches links verifies nothing
    and does not use up the link."""
    found, problem = verification.lookup(token)
    if problem:
        return render_template("auth/verify_invalid.html", message=problem), 400
    form = PostForm()
    if request.method == "GET":
        return render_template(
            "auth/verify_email.html",
            token=token,
            email=found.user.email,
            username=found.user.username,
            post_form=form,
        )
    if not form.validate_on_submit():
        abort(400)
    email = found.user.email
    problem = verification.complete(found)
    if problem:
        return render_template("auth/verify_invalid.html", message=problem), 400
    flash(f"Your e-mail address {email} is verified.", "success")
    return redirect(url_for("auth.index"))


@bp.post("/account/password")
@login_required
def change_password():
    user: User = current_user._get_current_object()
    form = ChangePasswordForm()
    if not user.password_hash:
        abort(404)
    ok = form.validate_on_submit()
    if ok:
        # Counted like a sign-in with this username: a session is no way to guess it.
        refusal = throttle().signin_begin(user.username)
        if refusal:
            form.current_password.errors.append(refusal.message)
            audit.record("password.change_failed", user, reason="locked")
            db.session.commit()
            return _account_page(form), 429, {"Retry-After": str(refusal.wait)}
        if not accounts.check_password(user, form.current_password.data):
            form.current_password.errors.append("That is not your current password.")
            ok = False
            for scope in throttle().signin_failed(user.username):
                audit.record("signin.locked", user, **_lock_facts(scope, user.username))
        else:
            throttle().signin_release(user.username)
    if ok:
        for message in policy_errors(form.password.data, user.username, user.email):
            form.password.errors.append(message)
            ok = False
    if not ok:
        audit.record("password.change_failed", user)
        db.session.commit()
        return _account_page(form), 400
    accounts.set_password(user, form.password.data, keep_sid=session.get("sid"))
    audit.record("password.change", user)
    db.session.commit()
    # Every other session ended with the old epoch, and their apps' tokens; keep this one.
    end_other_sessions(user, session.get("sid"), reason="password_change")
    keep_this_session(user)
    flash("Your password is changed. Other devices are signed out.", "success")
    return redirect(url_for("auth.account"))


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


@bp.post("/account/connect/<provider>")
@login_required
def connect(provider: str):
    """Start linking a social account to the signed-in account (POST: CSRF-checked)."""
    form = PostForm()
    if not form.validate_on_submit():
        abort(400)
    connector = next(
        (c for c in current_app.extensions["idp.redirect_connectors"] if c.name == provider), None
    )
    if connector is None or provider not in current_app.extensions["idp.social_connectors"]:
        abort(404)
    user: User = current_user._get_current_object()
    if signin.address_unproven(user):
        flash(signin.unproven_message(user, connector.label), "error")
        return redirect(url_for("auth.account")), 303
    session[SOCIAL_LINK_KEY] = provider
    return redirect(connector.login_url())


@bp.post("/account/disconnect/<connector>")
@login_required
def disconnect(connector: str):
    """Remove a way to sign in, unless it is the last one."""
    form = PostForm()
    if not form.validate_on_submit():
        abort(400)
    user: User = current_user._get_current_object()
    link = next((link for link in user.links if link.connector == connector), None)
    if link is None or connector not in current_app.extensions["idp.social_connectors"]:
        abort(404)
    if len(user.links) < 2:
        flash(
            "This is your only way to sign in, so it cannot be disconnected. Connect "
            "another one first.",
            "error",
        )
        return redirect(url_for("auth.account")), 303
    db.session.delete(link)
    audit.record("unlink", user, method=connector)
    db.session.commit()
    flash(f"{labels().get(connector, connector)} is disconnected.", "success")
    return redirect(url_for("auth.account"))
