"""The account page and what it changes: e-mail verification, password, connected sign-in
methods. Thin views, as in identity.auth.views."""

from __future__ import annotations

import logging

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required

from identity import audit
from identity.auth import accounts, bp, provisioning, verification
from identity.auth.finalize import begin_connect
from identity.auth.forms import (
    ChangePasswordForm,
)
from identity.auth.signin import (
    keep_this_session,
)
from identity.connectors.registry import registry
from identity.extensions import db
from identity.forms import PostForm
from identity.models import User
from identity.oidc.account_apps import apps_with_access
from identity.oidc.logout import end_other_sessions
from identity.passwords import policy_errors
from identity.throttle import lock_facts, throttle

log = logging.getLogger("identity.auth")


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
    connectable = [c for c in registry().redirect() if c.id not in linked]
    return render_template(
        "auth/account.html",
        mfa=mfa_summary(user),
        password_form=password_form,
        post_form=PostForm(),
        labels=registry().labels,
        connectable=connectable,
        # Signing in again with these is a fresh proof (removing a passkey).
        reauth=[c for c in registry().redirect() if c.id in linked],
        social=registry().redirect_ids(),
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
                audit.record("signin.locked", user, **lock_facts(scope, user.username))
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


@bp.post("/account/connect/<provider>")
@login_required
def connect(provider: str):
    """Start linking a redirect connector's identity to the signed-in account (POST:
    CSRF-checked)."""
    form = PostForm()
    if not form.validate_on_submit():
        abort(400)
    connector = registry().get(provider)
    if connector is None or connector.kind != "redirect":
        abort(404)
    user: User = current_user._get_current_object()
    if provisioning.address_unproven(user):
        flash(provisioning.unproven_message(user, connector.label), "error")
        return redirect(url_for("auth.account")), 303
    begin_connect(connector.id)
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
    if link is None or connector not in registry().redirect_ids():
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
    flash(f"{registry().label(connector)} is disconnected.", "success")
    return redirect(url_for("auth.account"))
