"""The audit log, read: /admin/audit and `flask --app idp audit list`, newest first, filtered
by account, app, type (a prefix) and time range; one filter parser for both."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from flask import render_template, request
from sqlalchemy import select
from wtforms import Form as PlainForm
from wtforms import StringField
from wtforms.validators import Length

from identity.admin import bp
from identity.admin.guard import admin_required
from identity.connectors import registry
from identity.extensions import db
from identity.forms import BAD_CHARS, strip
from identity.models import Client, Event, User

PER_PAGE = 50
TYPE_RE = re.compile(r"^[a-z0-9._-]*$")
TIME_HELP = "Use a date like 2024-05-31, or a time like 2024-05-31T14:30 (UTC unless it says)."


class FilterError(Exception):
    """A filter value that cannot be used; `field` names it (user, app, type, since, until)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Filters:
    user: User | None = None
    app: str | None = None
    type: str | None = None
    since: datetime | None = None  # inclusive, naive UTC
    until: datetime | None = None  # exclusive, naive UTC


def _text(field: str, value: str | None, limit: int) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if len(value) > limit:
        raise FilterError(field, f"use at most {limit} characters.")
    if BAD_CHARS.search(value):
        raise FilterError(field, "contains characters that cannot be used.")
    return value


def parse_time(field: str, value: str | None, *, end: bool) -> datetime | None:
    """An ISO 8601 date or date-time as naive UTC. A date alone means the whole day: its
    start for `since`, the start of the next day (exclusive) for `until`."""
    value = _text(field, value, 40)
    if value is None:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day)
            if not end:
                return start
            try:
                return start + timedelta(days=1)
            except OverflowError:
                return None  # the end of 9999-12-31: no bound at all
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise FilterError(field, f"{value!r} is not a date or time. {TIME_HELP}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if end:
        try:
            return moment + timedelta(microseconds=1)  # an instant: up to it, inclusive
        except OverflowError:
            return None
    return moment


def parse_filters(
    user: str | None = None,
    app: str | None = None,
    type_: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Filters:
    """The filters from what a person typed; FilterError for the first value that is wrong."""
    username = _text("user", user, 254)
    found = None
    if username is not None:
        found = User.find(username)
        if found is None:
            raise FilterError("user", f"no account is named {username!r}.")
    client_id = _text("app", app, 100)
    if client_id is not None and (len(client_id) > 48 or not client_id.isprintable()):
        raise FilterError("app", "a client_id has at most 48 printable characters.")
    kind = _text("type", type_, 64)
    if kind is not None:
        kind = kind.lower()
        if not TYPE_RE.match(kind):
            raise FilterError(
                "type", "event types use letters, digits, '.', '_' and '-' (like signin.)."
            )
    start = parse_time("since", since, end=False)
    stop = parse_time("until", until, end=True)
    if start is not None and stop is not None and start >= stop:
        raise FilterError("until", "the end of the range is before its start.")
    return Filters(user=found, app=client_id, type=kind, since=start, until=stop)


def _conditions(f: Filters) -> list:
    conditions = []
    if f.user is not None:
        conditions.append(Event.user_id == f.user.id)
    if f.app is not None:
        conditions.append(Event.data["client_id"].as_string() == f.app)
    if f.type:
        conditions.append(Event.type.startswith(f.type, autoescape=True))
    if f.since is not None:
        conditions.append(Event.created_at >= f.since)
    if f.until is not None:
        conditions.append(Event.created_at < f.until)
    return conditions


def newest(f: Filters, limit: int) -> list[Event]:
    query = select(Event).where(*_conditions(f)).order_by(Event.id.desc()).limit(limit)
    return list(db.session.scalars(query))


def page(
    f: Filters, *, before: int | None = None, after: int | None = None, per_page: int = PER_PAGE
) -> tuple[list[Event], bool, bool]:
    """One page, newest first, by keyset on the id: the events older than `before`, or
    newer than `after`, or the newest. Returns (events, newer ones exist, older ones exist)."""
    conditions = _conditions(f)
    if after is not None:
        query = (
            select(Event)
            .where(*conditions, Event.id > after)
            .order_by(Event.id.asc())
            .limit(per_page + 1)
        )
        rows = list(db.session.scalars(query))
        more = len(rows) > per_page
        return list(reversed(rows[:per_page])), more, True
    if before is not None:
        conditions.append(Event.id < before)
    query = select(Event).where(*conditions).order_by(Event.id.desc()).limit(per_page + 1)
    rows = list(db.session.scalars(query))
    return rows[:per_page], before is not None, len(rows) > per_page


def usernames(events: list[Event]) -> dict[int, str]:
    ids = {e.user_id for e in events if e.user_id is not None}
    if not ids:
        return {}
    return dict(db.session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


_PLAIN = re.compile(r"^[^\s\"'=\\]+$")


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        return v if _PLAIN.match(v) and v.isprintable() else json.dumps(v)
    if isinstance(v, list) and all(isinstance(x, str) and _PLAIN.match(x) for x in v):
        return ",".join(v) if v else "[]"
    return json.dumps(v, separators=(",", ":"), sort_keys=True, default=str)


def compact(data: dict | None) -> str:
    """An event's data as `key=value key="two words" list=a,b` (the page escapes it)."""
    return " ".join(f"{k}={_value(v)}" for k, v in (data or {}).items())


@bp.app_template_filter("audit_data")
def _audit_data(data: dict | None, *without: str) -> str:
    return compact({k: v for k, v in (data or {}).items() if k not in without})


def as_dict(event: Event, names: dict[int, str]) -> dict:
    return {
        "id": event.id,
        "time": event.created_at.isoformat(timespec="seconds") + "Z",
        "type": event.type,
        "user_id": event.user_id,
        "user": names.get(event.user_id) if event.user_id is not None else None,
        "ip": event.ip,
        "data": event.data or {},
    }


# -- the page -----------------------------------------------------------------------------


class AuditFilterForm(PlainForm):
    """Filters in the query string: a GET form, nothing to protect from cross-site posts."""

    user = StringField(
        "User",
        filters=[strip],
        validators=[Length(max=254, message="Use at most 254 characters.")],
    )
    app = StringField(
        "App",
        filters=[strip],
        validators=[Length(max=48, message="Use at most 48 characters.")],
    )
    type = StringField(
        "Type",
        filters=[strip],
        validators=[Length(max=64, message="Use at most 64 characters.")],
    )
    since = StringField(
        "From (UTC)",
        name="from",
        filters=[strip],
        validators=[Length(max=40, message="Use at most 40 characters.")],
    )
    until = StringField(
        "To (UTC)",
        name="to",
        filters=[strip],
        validators=[Length(max=40, message="Use at most 40 characters.")],
    )


def time_input_type(value: str | None) -> str:
    """The input for a time filter's value: a date picker for a day (or nothing yet), a
    date-and-time picker for a time, and plain text for anything else, so that a value a
    person typed wrong stays on the page beside its error (a picker would show it blank)."""
    if not value or re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return "date"
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?", value):
        return "datetime-local"
    return "text"


@bp.app_template_filter("method_label")
def method_label(method: str) -> str:
    """A sign-in method as the account page names it ("ldap" is "Company directory")."""
    return registry.label(method)


def _key(name: str) -> int | None | str:
    """A keyset position from the query string: None, an id, or "bad"."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,10}", raw) or not 1 <= int(raw) <= 2**31 - 1:
        return "bad"
    return int(raw)


@bp.get("/audit")
@admin_required
def audit():
    form = AuditFilterForm(request.args)
    args = {
        k: v for k, v in request.args.items() if k in ("user", "app", "type", "from", "to") and v
    }
    error = None
    filters = None
    if form.validate():
        try:
            filters = parse_filters(
                form.user.data, form.app.data, form.type.data, form.since.data, form.until.data
            )
        except FilterError as problem:
            field = {"since": form.since, "until": form.until}.get(problem.field) or form[
                problem.field
            ]
            field.errors.append(problem.message[0].upper() + problem.message[1:])
    before, after = _key("before"), _key("after")
    if "bad" in (before, after) or (before is not None and after is not None):
        error = "That page link is not valid: start again from the newest events."
    if filters is None or error:
        return _page(form, error=error, events=None, args=args), 400
    events, newer, older = page(filters, before=before, after=after)
    unknown_app = (
        filters.app is not None
        and db.session.scalar(select(Client.id).where(Client.client_id == filters.app)) is None
    )
    return _page(
        form,
        error=None,
        events=events,
        names=usernames(events),
        newer=newer,
        older=older,
        args=args,
        unknown_app=unknown_app,
        filtered=bool(args),
        paged=before is not None or after is not None,
    )


def _page(form: AuditFilterForm, **context):
    types = {"since": time_input_type(form.since.data), "until": time_input_type(form.until.data)}
    return render_template("admin/audit.html", form=form, time_types=types, **context)
