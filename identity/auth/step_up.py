"""Step-up: a signed-in person whose session is weaker than an app requires (its `acr`) is
asked for the missing step, through the same second step as a sign-in."""

from __future__ import annotations

from flask import redirect, request, session, url_for
from flask_login import current_user, login_required

from identity import acr, audit
from identity.auth import bp, mfa, second_step
from identity.auth import remember as remember_me
from identity.connectors.base import Identity
from identity.errors import render_error
from identity.extensions import db
from identity.models import User
from identity.security import safe_next

NO_PASSKEY = (
    "This app requires a sign-in with a passkey, and your account has none. Add one on your "
    "account page, then go back to the app."
)


@bp.get("/login/step-up")
@login_required
def step_up():
    user: User = current_user._get_current_object()
    wanted = request.args.get("acr")
    target = safe_next(request.args.get("next")) or url_for("auth.account")
    if wanted not in acr.REQUIRABLE:
        return render_error(400, "This sign-in request is not valid: unknown acr.")
    if acr.meets(session.get("amr"), wanted):
        return redirect(target, 303)
    enrolled = mfa.factors(user)
    if wanted == acr.PHR and "passkey" not in enrolled:
        return render_error(403, NO_PASSKEY)
    connector = session.get("connector")
    link = next((k for k in user.links if k.connector == connector), None) or user.links[0]
    # What this session proved so far is the first factor; the step adds to it.
    first = Identity(
        connector=link.connector,
        subject=link.subject,
        username=user.username,
        amr=tuple(session.get("amr") or ()),
    )
    second_step.hold(
        user,
        link,
        first,
        remember=bool(remember_me.presented_series()),
        enrol=not enrolled,
    )
    session[second_step.KEY] = {**session[second_step.KEY], "need": wanted}
    second_step.set_next(target)
    audit.record("mfa.step_up", user, acr=wanted, had=acr.of(session.get("amr")))
    db.session.commit()
    return redirect(url_for("auth.second_factor"), 303)
