"""Pages of second factors: the second step of a sign-in, enrolment of an authenticator app
(forced by IDP_MFA_REQUIRED, or from the account page), recovery codes, removal."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from identity import audit
from identity.auth import bp, mfa, passkeys, reauth, second_step, signin
from identity.errors import render_error
from identity.extensions import db
from identity.forms import MAX_FIELD, Form, PostForm, clean
from identity.models import User
from identity.oidc import app_context
from identity.security import landing, safe_next
from identity.throttle import throttle

EXPIRED = (
    "Your sign-in waited more than 5 minutes for its second step, so it has ended. Sign in again."
)
WRONG_CODE = "That code is not right, or it was already used. Try the next code of your app."
PASSKEY_ONLY = "The app you are signing in to asks for a passkey: a code is not enough."
GONE = "This account can no longer sign in. Ask an administrator."
NO_PROOF = (
    "Confirm with one of your passkeys, or sign in again: for "
    f"{reauth.FRESH_SECONDS // 60} minutes after a sign-in, no other proof is asked."
)
STILL_REQUIRED = (
    "Your organisation requires a second factor for your account, so it cannot be removed. "
    "Ask an administrator to reset it if you lost your authenticator."
)


def _code_field(label: str, message: str) -> StringField:
    return StringField(
        label,
        validators=[
            DataRequired(message),
            clean,
            Length(max=64, message="That is too long for a code."),
        ],
    )


class CodeForm(Form):
    code = _code_field("Code", "Enter a code from your authenticator app or a recovery code.")


class EnrolForm(Form):
    code = _code_field("Code from the app", "Enter the code your authenticator app shows.")


class ConfirmForm(Form):
    """Asks the person again: their password, or (an account without one) a code of their
    authenticator app."""

    proof = PasswordField(
        "Your password",
        validators=[
            DataRequired("Enter your password to confirm."),
            clean,
            Length(max=MAX_FIELD, message="That is too long."),
        ],
    )


def next_page(next_value: str | None) -> str | None:
    """After a first factor: the second step's page when one is pending (keeping
    `next_value` for after it), else None."""
    if second_step.pending() is None:
        return None
    second_step.set_next(safe_next(next_value))
    return url_for("auth.second_factor")


def _app():
    """The app this pending sign-in is for (its `next` is an /authorize request), or None."""
    state = second_step.pending()
    return app_context.for_next(state.get("next")) if state else None


def _pending_or_login():
    """The pending sign-in and its account, or the response that sends to the login page."""
    if second_step.expired():
        flash(EXPIRED, "error")
        return None, None, redirect(url_for("auth.login"), 303)
    state = second_step.pending()
    user = db.session.get(User, state["uid"]) if state else None
    if user is None:
        second_step.drop()
        return None, None, redirect(url_for("auth.login"), 303)
    return state, user, None


def _spend_code(user: User, typed: str, *, recovery: bool = True):
    """Check a code of `user` under the sign-in lockout. Returns (amr of the factor used,
    None) or (None, (status, message)). A malformed code is no guess and is not counted."""
    code = mfa.clean_code(typed)
    if mfa.TOTP_SHAPE.fullmatch(code):
        kind = "totp"
    elif recovery and mfa.RECOVERY_SHAPE.fullmatch(code):
        kind = "recovery"
    else:
        return None, (400, mfa.CODE_HELP if recovery else mfa.TOTP_HELP)
    refusal = throttle().signin_begin(user.username)
    if refusal:
        audit.record("mfa.failure", user, factor=kind, reason="locked")
        db.session.commit()
        return None, (429, refusal.message)
    ok = mfa.verify_totp(user, code) if kind == "totp" else mfa.use_recovery_code(user, code)
    if not ok:
        db.session.rollback()
        audit.record("mfa.failure", user, factor=kind, reason="wrong_code")
        for scope in throttle().signin_failed(user.username):
            audit.record("signin.locked", user, reason=f"{scope}_failures", factor=kind)
        db.session.commit()
        return None, (401, WRONG_CODE)
    throttle().signin_release(user.username)
    audit.record("mfa.success", user, factor=kind)
    db.session.commit()  # the code is spent, whatever happens next
    # RFC 8176: a TOTP code is "otp"; a recovery code is no OTP device but still a second
    # factor (a look-up secret, NIST SP 800-63B), hence "mfa" alone.
    return (["otp", "mfa"] if kind == "totp" else ["mfa"]), None


@bp.route("/login/second-factor", methods=["GET", "POST"])
def second_factor():
    state, user, away = _pending_or_login()
    if away:
        return away
    if state["enrol"]:
        return redirect(url_for("auth.second_factor_enrol"), 303)
    form = CodeForm()
    passkey_only = state.get("need") == "phr"  # an app asked for a passkey (step-up)
    if request.method == "GET":
        return _step_page(form, user, passkey_only=passkey_only)
    if passkey_only:
        return _step_page(form, user, PASSKEY_ONLY, 400, passkey_only=True)
    if not form.validate_on_submit():
        return _step_page(form, user, status=400)
    amr, problem = _spend_code(user, form.code.data)
    if problem:
        form.code.data = ""
        status, message = problem
        return _step_page(form, user, message, status)
    used_recovery = "otp" not in amr
    left = mfa.recovery_codes_left(user) if used_recovery else None
    if signin.complete(state, amr) is None:
        return render_error(403, GONE)
    if used_recovery:
        flash(
            f"You signed in with a recovery code; {left} left. If you lost your "
            "authenticator, set up a new one and make new recovery codes.",
            "info",
        )
    return redirect(state["next"] or landing(), 303)


def _step_page(
    form, user: User, error: str | None = None, status: int = 200, *, passkey_only=False
):
    headers = {"Retry-After": "60"} if status == 429 else {}
    enrolled = mfa.factors(user)
    return (
        render_template(
            "auth/second_factor.html",
            form=form,
            has_passkey="passkey" in enrolled,
            has_totp="totp" in enrolled and not passkey_only,
            passkey_only=passkey_only,
            error=error,
            post_form=PostForm(),
            username=user.username,
            help=mfa.CODE_HELP,
            app=_app(),
        ),
        status,
        headers,
    )


@bp.post("/login/second-factor/cancel")
def second_factor_cancel():
    form = PostForm()
    if not form.validate_on_submit():
        abort(400)
    second_step.drop()
    return redirect(url_for("auth.login"), 303)


@bp.route("/login/second-factor/enrol", methods=["GET", "POST"])
def second_factor_enrol():
    """Enrolment forced by IDP_MFA_REQUIRED, before any session exists."""
    state, user, away = _pending_or_login()
    if away:
        return away
    if not state["enrol"]:
        return redirect(url_for("auth.second_factor"), 303)
    form = EnrolForm()
    target = url_for("auth.second_factor_enrol")
    if request.method == "GET" or not form.validate_on_submit():
        return _enrol_page(
            form, user, target, forced=True, status=200 if request.method == "GET" else 400
        )
    codes, problem = _enrol(user, form.code.data)
    if problem:
        return _enrol_page(form, user, target, forced=True, error=problem[1], status=problem[0])
    if signin.complete(state, ["otp", "mfa"]) is None:
        return render_error(403, GONE)
    after = state["next"] or landing()
    if codes is None:  # recovery codes kept from before (an admin reset only the app)
        return redirect(after, 303)
    return render_template("auth/recovery_codes.html", codes=codes, next=after)


def _enrol(user: User, typed: str):
    """Enrol the authenticator being set up in this browser when `typed` is its code now.
    Returns (recovery codes, None) — the codes are new when this is the first factor — or
    (None, (status, message)). Wrong codes count toward the lockout."""
    sealed = session.get(second_step.ENROLLING)
    secret = mfa.unseal(sealed) if sealed else None
    code = mfa.clean_code(typed)
    if secret is None:
        return None, (400, "This setup has expired. Scan the new QR code below.")
    if not mfa.TOTP_SHAPE.fullmatch(code):
        return None, (400, mfa.TOTP_HELP)
    if "totp" in mfa.factors(user):
        return None, (409, "An authenticator app is already set up for this account.")
    refusal = throttle().signin_begin(user.username)
    if refusal:
        return None, (429, refusal.message)
    if not mfa.enrol(user, secret, code):
        db.session.rollback()
        audit.record("mfa.enrol_failed", user, factor="totp", reason="wrong_code")
        for scope in throttle().signin_failed(user.username):
            audit.record("signin.locked", user, reason=f"{scope}_failures", factor="totp")
        db.session.commit()
        return None, (
            401,
            "That code is not right. Check the app's clock, and enter the code it shows now.",
        )
    throttle().signin_release(user.username)
    session.pop(second_step.ENROLLING, None)
    audit.record("mfa.enrolled", user, factor="totp")
    codes = None
    if mfa.recovery_codes_left(user) == 0:
        codes = mfa.issue_recovery_codes(user)
        audit.record("mfa.recovery_codes_issued", user, count=len(codes))
    db.session.commit()
    return codes, None


def _enrol_page(form, user: User, target: str, *, forced: bool, error=None, status=200):
    """The QR code, the otpauth:// URI and the secret as text, and the code field. The
    secret being set up lives, encrypted, in this browser's session until confirmed."""
    sealed = session.get(second_step.ENROLLING)
    secret = mfa.unseal(sealed) if sealed else None
    if secret is None:
        secret = mfa.new_secret()
        session[second_step.ENROLLING] = mfa.seal(secret)
    uri = mfa.provisioning_uri(user, secret)
    form.code.data = ""
    return (
        render_template(
            "auth/totp_enrol.html",
            form=form,
            error=error,
            target=target,
            forced=forced,
            post_form=PostForm(),
            username=user.username,
            uri=uri,
            secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            qr=mfa.qr_svg_data_uri(uri),
            app=_app() if forced else None,
        ),
        status,
        {"Retry-After": "60"} if status == 429 else {},
    )


# -- the account page ---------------------------------------------------------------------


def mfa_summary(user: User) -> dict:
    """What the account page says about second factors."""
    from identity.models import TotpFactor

    totp = db.session.scalar(db.select(TotpFactor).where(TotpFactor.user_id == user.id))
    return {
        "totp": totp,
        "passkeys": passkeys.of(user),
        "recovery_left": mfa.recovery_codes_left(user),
        "required": mfa.required(user),
        "has_password": reauth.has_password(user),
        "fresh": reauth.fresh_signin(),
        "fresh_minutes": reauth.FRESH_SECONDS // 60,
        "confirm_form": ConfirmForm(),
    }


@bp.route("/account/two-factor", methods=["GET", "POST"])
@login_required
def totp_setup():
    user: User = current_user._get_current_object()
    if "totp" in mfa.factors(user):
        flash("An authenticator app is already set up. Remove it first to set up another.", "info")
        return redirect(url_for("auth.account", _anchor="two-factor"), 303)
    form = EnrolForm()
    target = url_for("auth.totp_setup")
    if request.method == "GET" or not form.validate_on_submit():
        return _enrol_page(
            form, user, target, forced=False, status=200 if request.method == "GET" else 400
        )
    codes, problem = _enrol(user, form.code.data)
    if problem:
        return _enrol_page(form, user, target, forced=False, error=problem[1], status=problem[0])
    flash("Your authenticator app is set up: sign-ins now ask for its code.", "success")
    if codes is None:
        return redirect(url_for("auth.account", _anchor="two-factor"), 303)
    return render_template("auth/recovery_codes.html", codes=codes, next=url_for("auth.account"))


def _confirmed(user: User, form: ConfirmForm, *, any_factor: bool = False) -> str | None:
    """None when the person proved again who they are (password, or for an account without
    one, a code of its authenticator), else the message. `any_factor` (removing a passkey,
    new recovery codes): a code of the authenticator whenever the account has one, or a
    sign-in of the last few minutes in this browser, does too (a passkey confirms a removal
    through its own endpoint)."""
    if any_factor and reauth.fresh_signin():
        return None  # the CSRF token is checked for every POST (CSRFProtect)
    totp = "totp" in mfa.factors(user)
    if not form.validate_on_submit():
        if any_factor and not (totp or reauth.has_password(user)):
            return NO_PROOF
        return "Enter your password to confirm."
    typed = form.proof.data
    as_code = any_factor and totp and mfa.TOTP_SHAPE.fullmatch(mfa.clean_code(typed))
    if reauth.has_password(user) and not as_code:
        return reauth.password_problem(typed, "mfa.reauth_failure")
    if not totp:
        return NO_PROOF
    _, problem = _spend_code(user, typed, recovery=False)
    if problem is None:
        db.session.commit()
    return problem[1] if problem else None


@bp.post("/account/recovery-codes")
@login_required
def recovery_codes_regenerate():
    """New recovery codes; the old ones end at once."""
    user: User = current_user._get_current_object()
    if not mfa.factors(user):
        abort(404)
    problem = _confirmed(user, ConfirmForm(), any_factor=True)
    if problem:
        flash(problem, "error")
        return redirect(url_for("auth.account", _anchor="two-factor"), 303)
    codes = mfa.issue_recovery_codes(user)
    audit.record("mfa.recovery_codes_issued", user, count=len(codes), replaced=True)
    db.session.commit()
    return render_template("auth/recovery_codes.html", codes=codes, next=url_for("auth.account"))


@bp.post("/account/two-factor/remove")
@login_required
def totp_remove():
    user: User = current_user._get_current_object()
    factors = mfa.factors(user)
    if "totp" not in factors:
        abort(404)
    if mfa.required(user) and factors == ["totp"]:
        flash(STILL_REQUIRED, "error")
        return redirect(url_for("auth.account", _anchor="two-factor"), 303)
    problem = _confirmed(user, ConfirmForm())
    if problem:
        flash(problem, "error")
        return redirect(url_for("auth.account", _anchor="two-factor"), 303)
    mfa.remove_totp(user)
    audit.record("mfa.removed", user, factor="totp")
    db.session.commit()
    flash("Your authenticator app and recovery codes are removed.", "success")
    return redirect(url_for("auth.account", _anchor="two-factor"), 303)
