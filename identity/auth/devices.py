"""What a person (or an admin, for them) sees of where they are signed in: live sessions
and remembered devices, each with when, where from, which browser and how; and ending one,
or all but this one, on every node, with its apps' tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from flask import abort, flash, redirect, session, url_for
from flask_login import current_user, login_required

from identity import audit, useragent
from identity.auth import bp, sessions
from identity.auth import remember as remember_me
from identity.auth.forms import PostForm
from identity.auth.views import labels
from identity.extensions import db
from identity.models import RememberToken, User

MAX_ID = 2**31 - 1  # an INTEGER column: PostgreSQL refuses to compare with more


@dataclass
class Device:
    """One line of a list: a session (key: its sid) or a remembered device (key: its id)."""

    key: str
    browser: str
    started: str
    last_seen: str
    address: str
    method: str
    current: bool


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def listing(user: User, *, sid: str | None = None, series: str | None = None) -> dict:
    """The account's live sessions and remembered devices, as lines to show; `sid` and
    `series` mark this browser's own."""
    names = labels()
    lines = []
    for row in sessions.of_user(user):
        method = names.get(row.connector, row.connector)
        lines.append(
            Device(
                key=row.sid,
                browser=useragent.label(row.user_agent),
                started=_when(row.started_at),
                last_seen=_when(row.last_seen_at),
                address=row.ip or "unknown",
                method=f"{method}, restored by a remembered device"
                if row.series and row.started_at > row.auth_time
                else method,
                current=row.sid == sid,
            )
        )
    remembered = [
        Device(
            key=str(row.id),
            browser=useragent.label(row.user_agent),
            started=_when(row.created_at),
            last_seen=_when(row.rotated_at),
            address=row.ip or "unknown",
            method=names.get(row.connector, row.connector),
            current=row.series == series,
        )
        for row in remember_me.of_user(user)
    ]
    return {"sessions": lines, "remembered": remembered}


def end_session(user: User, sid: str, *, by: str, keep_sid: str | None = None) -> bool:
    """End one session of `user`, and the remembered device that would restore it at once,
    unless that device is the one behind `keep_sid` (committed). False when there is no
    such live session."""
    row = sessions.find(user, sid)
    if row is None:
        return False
    sids = {row.sid}
    kept = sessions.find(user, keep_sid) if keep_sid else None
    if row.series and (kept is None or kept.series != row.series):
        sids |= sessions.of_series(user, row.series)
        remember_me.end(row.series, user)
    sessions.end(user, sids - {keep_sid}, reason=f"ended_by_{by}")
    return True


def forget_device(user: User, device_id: str, *, by: str) -> bool:
    """End one remembered device of `user` and the sessions it restored (committed). False
    when there is no such device."""
    known = device_id.isdigit() and int(device_id) <= MAX_ID
    row = db.session.get(RememberToken, int(device_id)) if known else None
    if row is None or row.user_id != user.id:
        return False
    sids = sessions.of_series(user, row.series)
    remember_me.end(row.series, user)
    audit.record("session.device_forgotten", user, by=by)
    db.session.commit()
    sessions.end(user, sids, reason=f"ended_by_{by}")
    return True


def end_others(user: User, *, sid: str | None, series: str | None, by: str) -> int:
    """End every session and remembered device of `user` but this browser's (committed);
    returns how many sessions ended."""
    others = {row.sid for row in sessions.of_user(user) if row.sid != sid}
    for row in remember_me.of_user(user):
        if row.series != series:
            others |= sessions.of_series(user, row.series) - {sid}
            remember_me.end(row.series, user)
    audit.record("session.ended_others", user, by=by, sessions=len(others))
    db.session.commit()
    sessions.end(user, others, reason=f"ended_by_{by}")
    return len(others)


# -- the account page's buttons -------------------------------------------------------------


def _checked_form() -> None:
    if not PostForm().validate_on_submit():
        abort(400)


@bp.post("/account/sessions/<sid>/end")
@login_required
def end_my_session(sid: str):
    _checked_form()
    user: User = current_user._get_current_object()
    if sid == session.get("sid"):
        flash("That is this session: use Sign out to end it.", "error")
    elif end_session(user, sid, by="user", keep_sid=session.get("sid")):
        flash("That session is signed out.", "success")
    else:
        flash("That session had already ended.", "info")
    return redirect(url_for("auth.account") + "#sessions", 303)


@bp.post("/account/devices/<device_id>/forget")
@login_required
def forget_my_device(device_id: str):
    _checked_form()
    user: User = current_user._get_current_object()
    if forget_device(user, device_id, by="user"):
        flash("That device is forgotten: it has to sign in again.", "success")
    else:
        flash("That device was already forgotten.", "info")
    return redirect(url_for("auth.account") + "#sessions", 303)


@bp.post("/account/sessions/end-others")
@login_required
def end_my_other_sessions():
    _checked_form()
    user: User = current_user._get_current_object()
    count = end_others(
        user, sid=session.get("sid"), series=remember_me.presented_series(), by="user"
    )
    flash(f"Signed out everywhere else ({count} sessions).", "success")
    return redirect(url_for("auth.account") + "#sessions", 303)
