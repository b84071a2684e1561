"""An administrator's trial sign-in with an upstream OpenID provider: the callback of a trial
shows what came back and what a real sign-in would do, and signs nobody in, links and
creates nothing.

The admin console starts one (identity.admin.upstreams_page) and marks its `state` in the
admin's session; the handler's finish (identity.auth.finalize) takes the mark, single-use,
and answers with `show()` instead of the funnel. The mark names the state of that one
authorization request: a normal sign-in never becomes a trial, a trial never a sign-in, and
a callback copied into another browser has neither the state nor the mark (state mismatch).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from flask import g, make_response, render_template, request, session
from flask_login import current_user
from sqlalchemy import select

from identity import audit
from identity.auth.provisioning import find_link
from identity.connectors.base import Identity, RedirectFailure
from identity.extensions import db
from identity.models import User
from identity.names import fold

KEY = "upstream_trials"
# Trials started and not finished kept at once (each is a few dozen bytes of the cookie).
PENDING_MAX = 3


def begin(connector, response) -> None:
    """Mark the authorization request `response` redirects to as this admin's trial."""
    query = parse_qs(urlsplit(response.headers.get("Location", "")).query)
    state = (query.get("state") or [""])[0]
    if not state:
        raise RedirectFailure("bad_metadata", "the authorization request carries no state")
    trials = dict(session.get(KEY) or {})
    trials[state] = {"connector": connector.id, "admin": current_user.get_id()}
    session[KEY] = dict(list(trials.items())[-PENDING_MAX:])


def pending(connector_id: str) -> bool:
    """Whether this callback's state is marked as a trial of `connector_id`."""
    trials = session.get(KEY) or {}
    state = request.args.get("state")
    return bool(state) and trials.get(state, {}).get("connector") == connector_id


def take(connector) -> dict | None:
    """The trial mark of this callback's state, removed (single-use); None for a sign-in."""
    if not pending(connector.id):
        return None
    trials = dict(session[KEY])
    mark = trials.pop(request.args["state"])
    if trials:
        session[KEY] = trials
    else:
        session.pop(KEY)
    return mark


def show(connector, result: Identity | RedirectFailure, mark: dict):
    """The trial's page: what came back, or why it failed; audited (outcome only)."""
    from identity.auth.finalize import FAILURES, failure, failure_message

    admin = current_user._get_current_object() if current_user.is_authenticated else None
    if admin is None or admin.get_id() != mark["admin"] or not admin.is_administrator:
        # Not the administrator who started it (no longer one): the page anyone gets.
        return failure(connector, RedirectFailure("state_mismatch", "a trial of another admin"))
    failed = result if isinstance(result, RedirectFailure) else None
    facts = None if failed else _facts(connector, result)
    audit.record(
        "admin.upstream_tried",
        admin,
        upstream=connector.upstream.id,
        outcome=failed.reason if failed else "ok",
        account=facts["account"].username if facts and facts["account"] else None,
    )
    db.session.commit()
    page = render_template(
        "admin/upstream_trial.html",
        admin_section="admin.upstreams",  # the console's section, marked in its menu
        connector=connector,
        facts=facts,
        failed=failed,
        message=failure_message(connector.label, failed) if failed else None,
        detail=failed.detail if failed else None,  # the upstream's words: for the admin only
    )
    return make_response(page, 200 if facts else FAILURES[failed.reason][0])


def _facts(connector, identity: Identity) -> dict:
    claims = getattr(g, "upstream_claims", None) or {}
    link = find_link(identity)
    account = link.user if link else None
    owner = None
    if account is None and identity.email:
        owner = db.session.scalar(select(User).where(User.email_key == fold(identity.email)))
    return {
        "issuer": connector.upstream.issuer,
        "sub": claims.get("sub"),
        "asserted_verified": claims.get("email_verified"),
        "identity": identity,
        "account": account,
        "email_owner": owner,
    }
