"""Access rules of forward authentication: which rule decides a request (host, then the
longest path prefix, default deny), whether a person passes it, and managing the rules."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote

from flask import current_app
from sqlalchemy import Row, bindparam, select

from identity import acr as acr_classes
from identity.extensions import db
from identity.models import ForwardAuthRule, User
from identity.settings.forward_auth import normal_host, under

# What each strength means, for pages and the command line.
STRENGTHS = {None: "any sign-in", acr_classes.MFA: "a second factor", acr_classes.PHR: "a passkey"}
_GROUP = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,200}")


class RuleError(ValueError):
    """A rule that cannot be stored: `field` says which value, the message why."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class BadPath(ValueError):
    """A request path that cannot be read unambiguously."""


def canonical_path(uri: str) -> str:
    """The path of `uri` as a lenient app may read it, for prefix matching: query and
    fragment cut, percent-decoded until it no longer changes, backslashes as slashes,
    `;parameters` dropped from segments, dot segments resolved, repeated slashes folded,
    case-folded. So `/public/..%2Fadmin` and `/PUBLIC/..;/admin` are `/admin`."""
    path = re.split(r"[?#]", uri, maxsplit=1)[0]
    for _ in range(4):
        try:
            decoded = unquote(path, errors="strict")
        except UnicodeDecodeError:
            raise BadPath("the path is not UTF-8 once percent-decoded") from None
        if decoded == path:
            break
        path = decoded
    else:
        raise BadPath("the path is still percent-encoded after four rounds of decoding")
    if re.search(r"[\x00-\x1f\x7f]", path):
        raise BadPath("the path contains control characters")
    path = re.sub(r";[^/]*", "", path.replace("\\", "/"))
    path = re.sub(r"/{2,}", "/", "/" + path)
    path = posixpath.normpath(path)
    return "/" if path in ("", ".", "//") else path.casefold()


def _covers(prefix: str, path: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


# Asked at every request a proxy checks: the columns only, built once.
OF_HOST = select(ForwardAuthRule.path_prefix, ForwardAuthRule.groups, ForwardAuthRule.acr).where(
    ForwardAuthRule.host == bindparam("host")
)


def deciding(host: str, path: str) -> Row | None:
    """The rule (path_prefix, groups, acr) for `host` (normal_host) whose prefix covers
    `path` (canonical_path) and is the longest; None: no rule, the request is refused.
    Stored prefixes are normalised by check(): folding their case is all that is left."""
    rules = db.session.execute(OF_HOST, {"host": host}).all()
    covering = [r for r in rules if _covers(r.path_prefix.casefold(), path)]
    return max(covering, key=lambda r: len(r.path_prefix), default=None)


def deciding_without(rule: ForwardAuthRule) -> ForwardAuthRule | None:
    """The rule that decides the path `rule.path_prefix` of its host once `rule` is gone."""
    others = db.session.scalars(
        select(ForwardAuthRule).where(
            ForwardAuthRule.host == rule.host, ForwardAuthRule.id != rule.id
        )
    )
    path = rule.path_prefix.casefold()
    covering = [r for r in others if _covers(r.path_prefix.casefold(), path)]
    return max(covering, key=lambda r: len(r.path_prefix), default=None)


def in_groups(rule: ForwardAuthRule | Row, user: User | Row) -> bool:
    """Whether `user` is one the rule lets pass: anyone signed in, or a member of one of its
    groups (names compared case-insensitively, as directories do)."""
    if not rule.groups:
        return True
    mine = {g.casefold() for g in user.groups or [] if isinstance(g, str)}
    return any(g.casefold() in mine for g in rule.groups)


@dataclass
class Wanted:
    host: str
    path_prefix: str
    groups: list[str]
    acr: str | None


def check(host: str, path_prefix: str | None, groups: list[str], strength: str | None) -> Wanted:
    """The rule's values, normalised, or RuleError naming the first bad one."""
    domain = current_app.config["FORWARD_AUTH_COOKIE_DOMAIN"]
    if not domain:
        raise RuleError("host", "set IDP_FORWARD_AUTH_COOKIE_DOMAIN first: it is off")
    name = normal_host((host or "").strip())
    if name is None:
        raise RuleError("host", f"{host!r} is not a host name (such as wiki.{domain})")
    if not under(name, domain):
        raise RuleError("host", f"{name} is not under {domain} (IDP_FORWARD_AUTH_COOKIE_DOMAIN)")
    prefix = (path_prefix or "/").strip()
    if (
        not prefix.startswith("/")
        or len(prefix) > 512
        or re.search(r"[\s?#;\\%\x00-\x1f\x7f-\x9f]", prefix)
    ):
        raise RuleError(
            "path", "the path prefix must start with / and hold no spaces, ?, #, ;, % or \\"
        )
    prefix = posixpath.normpath(re.sub(r"/{2,}", "/", prefix))
    prefix = "/" if prefix in (".", "//") else prefix
    names = []
    for group in groups:
        group = group.strip()
        if not group:
            continue
        if not _GROUP.fullmatch(group):
            raise RuleError("groups", f"{group[:40]!r} is not a group name")
        if group.casefold() not in {n.casefold() for n in names}:
            names.append(group)
    if strength in ("", "0", "any"):
        strength = None
    if strength not in STRENGTHS:
        raise RuleError("acr", "the strength must be any, mfa or phr")
    return Wanted(name, prefix, names, strength)


def add(wanted: Wanted) -> ForwardAuthRule:
    """Store a checked rule (the caller commits); RuleError when its host and path exist."""
    exists = db.session.scalar(
        select(ForwardAuthRule.id).where(
            ForwardAuthRule.host == wanted.host, ForwardAuthRule.path_prefix == wanted.path_prefix
        )
    )
    if exists is not None:
        raise RuleError("path", f"{wanted.host}{wanted.path_prefix} has a rule already (#{exists})")
    rule = ForwardAuthRule(
        host=wanted.host, path_prefix=wanted.path_prefix, groups=wanted.groups, acr=wanted.acr
    )
    db.session.add(rule)
    db.session.flush()
    return rule


def listed() -> list[ForwardAuthRule]:
    """Every rule, by host then path."""
    return list(
        db.session.scalars(
            select(ForwardAuthRule).order_by(ForwardAuthRule.host, ForwardAuthRule.path_prefix)
        )
    )


def describe(rule: ForwardAuthRule) -> dict:
    return {
        "id": rule.id,
        "host": rule.host,
        "path": rule.path_prefix,
        "groups": list(rule.groups or []),
        "who": ", ".join(rule.groups) if rule.groups else "anyone signed in",
        "acr": rule.acr or "any",
        "strength": STRENGTHS.get(rule.acr, rule.acr),
    }
