"""Passkey pages and the JSON endpoints of their script (identity/static/passkeys.js):
registration on the account page, passwordless sign-in, the second factor, rename, remove."""

from __future__ import annotations

import json

from flask import (
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required
from sqlalchemy import select

from identity import audit
from identity.auth import bp, mfa, passkeys, provisioning, signin
from identity.auth.mfa_views import GONE, STILL_REQUIRED, ConfirmForm, _confirmed, _pending_or_login
from identity.auth.passkeys import PasskeyProblem
from identity.auth.refusals import SignInRefused
from identity.connectors.base import Identity
from identity.extensions import db
from identity.models import User
from identity.security import landing, safe_next
from identity.throttle import client_ip, throttle, wait_text

ONLY_WAY = (
    "This passkey is your only way to sign in, so it cannot be removed. Add another way first."
)
FRESH_CODES = "passkey_recovery_codes"
BUSY = "Too many sign-in attempts from this address. Wait {wait} and try again."
NAME_HELP = f"Give the passkey a name of 1 to {passkeys.NAME_MAX} characters, e.g. “Work laptop”."


def _options(text: str) -> Response:
    return Response(text, mimetype="application/json", headers={"Cache-Control": "no-store"})


def _problem(status: int, message: str):
    return jsonify(error="passkey_refused", error_description=message), status


def _refused(problem: PasskeyProblem):
    """A failed ceremony's JSON answer; a lock says when to try again (Retry-After)."""
    body, status = _problem(problem.status, problem.message)
    return body, status, {"Retry-After": str(problem.wait)} if problem.wait else {}


def _body() -> dict:
    """The JSON object the script posted ({} when it is not one)."""
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _go(target: str):
    return jsonify(redirect=target)


# -- registration (account page) ----------------------------------------------------------


@bp.post("/account/passkeys/options")
@login_required
def passkey_register_options():
    user: User = current_user._get_current_object()
    if provisioning.address_unproven(user):
        return _problem(403, provisioning.unproven_message(user, "a passkey"))
    return _options(passkeys.registration_options(user))


@bp.post("/account/passkeys")
@login_required
def passkey_register():
    user: User = current_user._get_current_object()
    body = _body()
    name = passkeys.clean_name(body.get("name"))
    if name is None:
        return _problem(400, NAME_HELP)
    if provisioning.address_unproven(user):
        return _problem(403, provisioning.unproven_message(user, "a passkey"))
    try:
        passkeys.register(user, body.get("credential"), name)
    except PasskeyProblem as problem:
        return _refused(problem)
    flash(
        f"Your passkey “{name}” is added: you can sign in with it, without a password.", "success"
    )
    if mfa.recovery_codes_left(user) == 0:
        # The first second factor: recovery codes, shown once on the next page. They wait
        # for it sealed (the session cookie is signed, not encrypted), and only there.
        codes = mfa.issue_recovery_codes(user)
        audit.record("mfa.recovery_codes_issued", user, count=len(codes))
        db.session.commit()
        session[FRESH_CODES] = mfa.seal(json.dumps(codes))
        return _go(url_for("auth.passkey_recovery_codes"))
    return _go(url_for("auth.account", _anchor="passkeys"))


@bp.get("/account/passkeys/recovery-codes")
@login_required
def passkey_recovery_codes():
    """The recovery codes made with the first passkey, shown this once."""
    sealed = session.pop(FRESH_CODES, None)
    opened = mfa.unseal(sealed) if isinstance(sealed, str) else None
    if opened is None:
        return redirect(url_for("auth.account", _anchor="passkeys"), 303)
    return render_template(
        "auth/recovery_codes.html",
        codes=json.loads(opened),
        lost="passkeys",
        next=url_for("auth.account", _anchor="passkeys"),
    )


@bp.post("/account/passkeys/<int:passkey_id>/rename")
@login_required
def passkey_rename(passkey_id: int):
    user: User = current_user._get_current_object()
    passkey = passkeys.find(user, passkey_id)
    if passkey is None:
        abort(404)
    name = passkeys.clean_name(request.form.get("name"))
    if name is None:
        flash(NAME_HELP, "error")
        return redirect(url_for("auth.account", _anchor="passkeys"), 303)
    passkey.name = name
    audit.record("passkey.renamed", user, passkey=passkey.id)
    db.session.commit()
    flash(f"The passkey is now called “{name}”.", "success")
    return redirect(url_for("auth.account", _anchor="passkeys"), 303)


def _removal_refused(user: User, passkey_id: int):
    """The passkey `passkey_id` of `user` to remove and None, or None and why not (a
    message): it is not theirs (404), a required second factor, or their last way in. The
    account's row is locked first, so that two removals at once cannot both pass the check
    and take the last way in between them."""
    db.session.execute(select(User.id).where(User.id == user.id).with_for_update())
    passkey = passkeys.find(user, passkey_id)
    if passkey is None:
        abort(404)
    if mfa.required(user) and mfa.factors(user) == ["passkey"] and passkeys.count(user) == 1:
        return None, STILL_REQUIRED
    if passkeys.count(user) == 1 and [link.connector for link in user.links] == ["passkey"]:
        return None, ONLY_WAY
    return passkey, None


def _remove(user: User, passkey) -> str:
    """Remove `passkey` (confirmed); committed. Where to go next, its message flashed."""
    name, passkey_id = passkey.name, passkey.id
    passkeys.remove(user, passkey)
    audit.record("passkey.removed", user, passkey=passkey_id)
    db.session.commit()
    flash(f"The passkey “{name}” is removed: it no longer signs in here.", "success")
    return url_for("auth.account", _anchor="passkeys")


@bp.post("/account/passkeys/<int:passkey_id>/remove")
@login_required
def passkey_remove(passkey_id: int):
    """Removal confirmed by the form: a password, a code of the authenticator app, or a
    sign-in of the last few minutes (a passkey confirms through passkey_remove_confirmed)."""
    user: User = current_user._get_current_object()
    _, refusal = _removal_refused(user, passkey_id)
    db.session.rollback()  # the lock is taken again once the proof is in
    problem = refusal or _confirmed(user, ConfirmForm(), any_factor=True)
    if not problem:
        passkey, problem = _removal_refused(user, passkey_id)
    if problem:
        db.session.rollback()
        flash(problem, "error")
        return redirect(url_for("auth.account", _anchor="passkeys"), 303)
    return redirect(_remove(user, passkey), 303)


@bp.post("/account/passkeys/confirm/options")
@login_required
def passkey_confirm_options():
    return _options(passkeys.authentication_options("confirm", current_user))


@bp.post("/account/passkeys/<int:passkey_id>/remove/passkey")
@login_required
def passkey_remove_confirmed(passkey_id: int):
    """Removal confirmed by one of the account's passkeys (this one or another), with user
    verification: what an account without a password or an authenticator app has."""
    user: User = current_user._get_current_object()
    _, refusal = _removal_refused(user, passkey_id)
    db.session.rollback()  # the lock is taken again once the proof is in
    if refusal:
        return _problem(409, refusal)
    try:
        passkeys.authenticate("confirm", _body().get("credential"), user)
    except PasskeyProblem as problem:
        return _refused(problem)
    passkey, refusal = _removal_refused(user, passkey_id)
    if refusal:
        db.session.rollback()
        return _problem(409, refusal)
    return _go(_remove(user, passkey))


# -- passwordless sign-in -----------------------------------------------------------------


@bp.post("/login/passkey/options")
def passkey_signin_options():
    # Anyone may ask, and each challenge is a row (and each answer a signature check): counted
    # with the password checks of this client address.
    wait = throttle().use("password-checks", client_ip())
    if wait:
        body, status = _problem(429, BUSY.format(wait=wait_text(wait)))
        return body, status, {"Retry-After": str(wait)}
    return _options(passkeys.authentication_options("signin", None))


@bp.post("/login/passkey")
def passkey_signin():
    body = _body()
    try:
        passkey, methods = passkeys.authenticate("signin", body.get("credential"), None)
    except PasskeyProblem as problem:
        return _refused(problem)
    owner = db.session.get(User, passkey.user_id)
    # Possession of the key and the authenticator's user verification: two factors already,
    # so sign_in() asks for no second one. The directory re-check happens inside it.
    identity = Identity(
        connector=passkeys.CONNECTOR,
        subject=owner.subject,
        username=owner.username,
        amr=(*methods, "mfa"),
    )
    try:
        signin.sign_in(identity, remember=body.get("remember") is True)
    except SignInRefused as refused:
        return _problem(refused.status, refused.message)
    next_value = body.get("next") if isinstance(body.get("next"), str) else None
    return _go(safe_next(next_value) or landing())


# -- the second factor --------------------------------------------------------------------


@bp.post("/login/second-factor/passkey/options")
def passkey_second_options():
    state, user, away = _pending_or_login()
    if away:
        return _problem(401, "Your sign-in has ended. Sign in again.")
    return _options(passkeys.authentication_options("second", user))


@bp.post("/login/second-factor/passkey")
def passkey_second():
    state, user, away = _pending_or_login()
    if away:
        return _problem(401, "Your sign-in has ended. Sign in again.")
    try:
        _, methods = passkeys.authenticate("second", _body().get("credential"), user)
    except PasskeyProblem as problem:
        return _refused(problem)
    if signin.complete(state, [*methods, "mfa"]) is None:
        return _problem(403, GONE)
    return _go(state["next"] or landing())
