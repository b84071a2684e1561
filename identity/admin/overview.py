"""The console's home: counts, the health of each dependency (the checks /readyz runs) and
warnings about settings that change what the service guarantees."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app, render_template
from sqlalchemy import String, cast, func, or_, select

from identity import ops
from identity.admin import bp
from identity.admin.guard import admin_required
from identity.extensions import db
from identity.models import Client, Event, User
from identity.models.users import utcnow

HEALTH_NAMES = {"database": "Database", "redis": "Redis", "directory": "Directory", "mail": "Mail"}


@dataclass(frozen=True)
class Notice:
    """Something an administrator should know; `setting` names what changes it."""

    text: str
    setting: str | None = None


def counts() -> dict[str, int]:
    """Accounts (all, active, disabled, admins), registered apps, and sign-ins in the last
    24 hours (successes and failures, from the audit log)."""
    group = current_app.config.get("LDAP_ADMIN_GROUP")
    admin = User.is_admin.is_(True)
    if group:
        # group_dns is a JSON list of normalised DNs: the DN, quoted as JSON, is in its text.
        admin = or_(admin, cast(User.group_dns, String).contains(json.dumps(group)))
    since = utcnow() - timedelta(hours=24)

    def number(query) -> int:
        return db.session.scalar(query) or 0

    def events(kind: str) -> int:
        return number(
            select(func.count(Event.id)).where(Event.type == kind, Event.created_at >= since)
        )

    accounts = number(select(func.count(User.id)))
    disabled = number(select(func.count(User.id)).where(User.disabled.is_(True)))
    return {
        "accounts": accounts,
        "active": accounts - disabled,
        "disabled": disabled,
        "admins": number(select(func.count(User.id)).where(admin, User.disabled.is_(False))),
        "apps": number(select(func.count(Client.id))),
        "signins": events("signin.success"),
        "failures": events("signin.failure"),
    }


def warnings(health: dict[str, dict]) -> list[Notice]:
    """What the settings and the checks just run say an administrator should know."""
    cfg = current_app.config
    found = []
    for name, check in health.items():
        if not check["ok"]:
            found.append(
                Notice(f"{HEALTH_NAMES[name]} not reachable or refused: {check['detail']}")
            )
    if not cfg.get("MAIL_SERVER"):
        found.append(
            Notice(
                "No SMTP server: password-reset and e-mail verification links go to the "
                "service's log, not to people.",
                "IDP_MAIL_SERVER",
            )
        )
    if not cfg.get("REDIS_URL"):
        found.append(
            Notice(
                "Redis is not set: failed sign-ins, lockouts and rate limits are counted per "
                "process, so each worker and each node counts on its own.",
                "IDP_REDIS_URL",
            )
        )
    if cfg["LDAP_URL"] and cfg.get("LDAP_TLS_INSECURE_SKIP_VERIFY"):
        found.append(
            Notice(
                "The directory's certificate is not checked: anyone on the network path can "
                "read the passwords people type.",
                "IDP_LDAP_TLS_INSECURE_SKIP_VERIFY",
            )
        )
    fault = last_directory_fault()
    if fault is not None:
        found.append(
            Notice(
                f"Directory sign-ins failed on a configuration fault at "
                f"{fault.created_at:%Y-%m-%d %H:%M} UTC: {fault.data.get('detail', '')}"
            )
        )
    return found


def last_directory_fault() -> Event | None:
    """The last sign-in of the past 24 hours that a directory setting made fail."""
    since = utcnow() - timedelta(hours=24)
    failures = select(Event).where(
        Event.type == "signin.failure",
        Event.created_at >= since,
        Event.data["reason"].as_string() == "misconfigured",
    )
    return db.session.scalar(failures.order_by(Event.id.desc()).limit(1))


@bp.get("/")
@admin_required
def home():
    health = ops.health(mail=True)
    return render_template(
        "admin/home.html",
        counts=counts(),
        health=health,
        health_names=HEALTH_NAMES,
        warnings=warnings(health),
        mail_configured=bool(current_app.config.get("MAIL_SERVER")),
    )
