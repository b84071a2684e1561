"""The end of every redirect sign-in (dex's finalizeLogin): a connector's Identity goes to
the funnel or is linked to the signed-in account; a RedirectFailure becomes a clear page.

Connectors call `handler.start(connector)` when a person presses their button and return
`handler.finish(connector, result)` from their callback (identity.connectors.registry).
"""

from __future__ import annotations

import logging
import re

from flask import flash, make_response, redirect, render_template, request, session, url_for
from flask_login import current_user

from identity import audit
from identity.auth import upstream_trial
from identity.auth.provisioning import link_identity
from identity.auth.refusals import SignInRefused
from identity.auth.signin import sign_in
from identity.connectors.base import Identity, RedirectFailure
from identity.extensions import db
from identity.security import landing, safe_next

log = logging.getLogger("identity.social")

NEXT_KEY = "social_next"
LINK_KEY = "social_link"

MISCONFIGURED = (
    "{label} is not set up correctly on this service, so it cannot be used to sign in. "
    "Please tell your administrators."
)
UNVERIFIED = (
    "The answer from {label} could not be verified, so you are not signed in. Please try again."
)
# What people read for each RedirectFailure reason, and the page's status.
FAILURES = {
    "access_denied": (
        403,
        "You did not allow access at {label}, so you are not signed in. Nothing was changed.",
    ),
    "provider_error": (502, "{label} reported an error ({error}). Please try again later."),
    "state_mismatch": (
        400,
        "This sign-in could not be verified: it did not start here, or it was started again "
        "meanwhile. Please try again.",
    ),
    "missing_code": (
        400,
        "This sign-in could not be verified: {label} sent back no answer to it. Please try again.",
    ),
    "token_exchange_failed": (502, "{label} did not accept the sign-in. Please try again."),
    "bad_answer": (502, "{label} gave an answer that could not be read. Please try again."),
    "bad_profile": (502, "{label} did not say who you are. Please try again later."),
    "timeout": (504, "{label} did not answer in time. Please try again later."),
    "provider_unreachable": (502, "{label} could not be reached. Please try again later."),
    "wrong_issuer": (502, MISCONFIGURED),
    "bad_metadata": (502, MISCONFIGURED),
    "bad_id_token": (502, UNVERIFIED),
    "bad_userinfo": (502, "{label} did not say who you are. Please try again later."),
    "bad_callback": (400, "The answer from {label} is incomplete. Please try again."),
}
ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Refusals that are about which account an identity belongs to: a conflict.
CONFLICTS = ("email_in_use", "linked_elsewhere")


class Handler:
    """The RedirectHandler every redirect connector is given (identity.connectors.base)."""

    def start(self, connector) -> None:
        # Remember where to go afterwards, and forget any half-finished connect.
        session[NEXT_KEY] = safe_next(request.args.get("next"))
        if session.get(LINK_KEY) != connector.id or not current_user.is_authenticated:
            session.pop(LINK_KEY, None)

    def finish(self, connector, result: Identity | RedirectFailure):
        trial = upstream_trial.take(connector)
        if trial is not None:  # an administrator's trial: shown, never signed in
            return upstream_trial.show(connector, result, trial)
        if isinstance(result, RedirectFailure):
            return failure(connector, result)
        return finalize_login(connector, result)

    def trial_pending(self, connector_id: str) -> bool:
        return upstream_trial.pending(connector_id)


handler = Handler()


def begin_connect(connector_id: str) -> None:
    """The account page's Connect: the next callback of that connector links, not signs in."""
    session[LINK_KEY] = connector_id


def finalize_login(connector, identity: Identity):
    """Sign in, create or link with `identity`; the response to send."""
    if identity.connector != connector.id:
        raise ValueError(f"{connector.id} returned an identity of {identity.connector}")
    linking = session.pop(LINK_KEY, None) == connector.id and current_user.is_authenticated
    next_url = session.pop(NEXT_KEY, None)
    try:
        if linking:
            link_identity(current_user._get_current_object(), identity, connector.label)
        else:
            sign_in(identity, label=connector.label)
    except SignInRefused as refused:
        status = 409 if refused.reason in CONFLICTS else refused.status
        return _page(connector, refused.message, status)
    if linking:
        flash(f"{connector.label} is connected: you can sign in with it.", "success")
        return redirect(url_for("auth.account"))
    from identity.auth.mfa_views import next_page

    return redirect(next_page(next_url) or next_url or landing())


def failure(connector, failed: RedirectFailure):
    """The page for a failed redirect sign-in; audited and logged (detail to the log only)."""
    session.pop(LINK_KEY, None)
    log.warning("%s sign-in failed: %s %s", connector.id, failed.reason, failed.detail)
    audit.record("signin.failure", None, method=connector.id, reason=failed.reason)
    db.session.commit()
    status = FAILURES[failed.reason][0]
    return _page(connector, failure_message(connector.label, failed), status)


def failure_message(label: str, failed: RedirectFailure) -> str:
    """What people read for `failed` (the failure page, the admin console's live check)."""
    # The upstream's error code is shown only when it looks like one (RFC 6749: ASCII).
    error = failed.error if failed.error and ERROR_CODE.fullmatch(failed.error) else "unknown"
    return FAILURES[failed.reason][1].format(label=label, error=error)


def _page(connector, message: str, status: int):
    # A Response, not a (body, status) tuple: Flask-Dance ignores anything else.
    return make_response(
        render_template("auth/social_error.html", provider=connector, message=message), status
    )
