"""The redirect connectors as the pages see them: those fixed at start (social providers,
IDP_OIDC_UPSTREAMS) and the upstream OpenID providers added in the admin console, read from
the database at most every IDP_CLIENT_CACHE_SECONDS; and those providers stored, their
client secrets encrypted (identity.secretbox)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from cryptography.fernet import InvalidToken
from flask import current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from config import ConfigError
from identity.connectors.oidc_upstream import UpstreamConnector
from identity.extensions import db
from identity.models import UpstreamProvider
from identity.models.users import utcnow
from identity.secretbox import fernet
from identity.settings.upstreams import Upstream, parse_entry

log = logging.getLogger("identity.oidc_upstream")

# HKDF's info: this key is for upstream client secrets only.
PURPOSE = b"idp oidc upstream client secret v1"


class RedirectConnectors:
    """A list of connectors (iterate, len, bool) that follows the admin console's changes:
    every process reads the stored providers again after CLIENT_CACHE_SECONDS, the process
    that made a change at once (invalidate())."""

    def __init__(self, app, fixed: list):
        self.fixed = list(fixed)
        self._stored: list[UpstreamConnector] = []
        self._read_at: float | None = None
        self._lock = threading.Lock()
        self._ttl = app.config["CLIENT_CACHE_SECONDS"]
        self._timeout = app.config["SOCIAL_TIMEOUT"]
        self._ca_file = app.config["SOCIAL_CA_FILE"]

    def current(self) -> list:
        if has_app_context():
            read_at = self._read_at
            if read_at is None or time.monotonic() - read_at >= self._ttl:
                self._reload()
        return self.fixed + self._stored

    def invalidate(self) -> None:
        self._read_at = None

    def fixed_ids(self) -> set[str]:
        return {c.upstream.id for c in self.fixed if isinstance(c, UpstreamConnector)}

    def __iter__(self):
        return iter(self.current())

    def __len__(self) -> int:
        return len(self.current())

    def __bool__(self) -> bool:
        return bool(self.current())

    def __add__(self, other: list) -> list:
        return self.current() + list(other)

    def _reload(self) -> None:
        with self._lock:
            started = time.monotonic()
            try:
                with db.session.no_autoflush:
                    rows = db.session.scalars(
                        select(UpstreamProvider)
                        .where(UpstreamProvider.enabled.is_(True))
                        .order_by(UpstreamProvider.created_at, UpstreamProvider.id)
                    ).all()
            except SQLAlchemyError as exc:  # not upgraded yet, or the database is down
                db.session.rollback()
                log.error("stored upstream providers could not be read: %s", exc)
                self._read_at = started
                return
            old = {c.upstream: c for c in self._stored}
            fixed = self.fixed_ids()
            stored = []
            for row in rows:
                if row.id in fixed:
                    continue  # the environment's entry of that id wins
                try:
                    upstream = upstream_of(row)
                except (ConfigError, InvalidToken) as exc:
                    log.error("stored upstream %s is not usable: %s", row.id, exc)
                    continue
                connector = old.get(upstream) or UpstreamConnector(
                    upstream, timeout=self._timeout, ca_file=self._ca_file
                )
                stored.append(connector)
            self._stored = stored
            self._read_at = started


class ConnectorNames:
    """The names of the connectors of a RedirectConnectors, as the set it replaces."""

    def __init__(self, connectors: RedirectConnectors):
        self.connectors = connectors

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self.connectors)

    def __iter__(self):
        return iter([c.name for c in self.connectors])


def install(app, fixed: list) -> None:
    connectors = RedirectConnectors(app, fixed)
    app.extensions["idp.redirect_connectors"] = connectors
    app.extensions["idp.social_connectors"] = ConnectorNames(connectors)


# -- the stored providers ---------------------------------------------------------------


def seal(secret: str) -> str:
    return fernet(PURPOSE).encrypt(secret.encode()).decode()


def unseal(token: str) -> str:
    return fernet(PURPOSE).decrypt(token.encode()).decode()


def entry_of(row: UpstreamProvider, secret: str | None = None) -> dict[str, Any]:
    """The row as an IDP_OIDC_UPSTREAMS entry."""
    return {
        "id": row.id,
        "issuer": row.issuer,
        "client_id": row.client_id,
        "client_secret": secret if secret is not None else unseal(row.client_secret),
        "label": row.label,
        "scopes": row.scopes,
        "username_claim": row.username_claim,
        "groups_claim": row.groups_claim,
        "trust_email_verified": row.trust_email_verified,
    }


def upstream_of(row: UpstreamProvider) -> Upstream:
    upstream = parse_entry(entry_of(row), f"stored upstream {row.id}")
    assert upstream is not None  # entry_of never says "enabled": false
    return upstream


def stored() -> list[UpstreamProvider]:
    return list(db.session.scalars(select(UpstreamProvider).order_by(UpstreamProvider.created_at)))


def save(entry: dict[str, Any], *, row: UpstreamProvider | None = None) -> UpstreamProvider:
    """Check `entry` as IDP_OIDC_UPSTREAMS would (ConfigError "This provider: …") and store
    it, new or over `row`; the caller commits. An empty client_secret keeps row's."""
    if row is not None and not entry.get("client_secret"):
        try:
            entry = {**entry, "client_secret": unseal(row.client_secret)}
        except InvalidToken:
            raise ConfigError(
                "This provider: 'client_secret' cannot be read any more (was "
                "KEY_ENCRYPTION_KEY or SECRET_KEY changed?): enter it again"
            ) from None
    if row is None:
        if entry.get("id") in _connectors().fixed_ids():
            raise ConfigError(
                f"This provider: the id {entry['id']!r} is set in IDP_OIDC_UPSTREAMS; "
                "choose another"
            )
        if isinstance(entry.get("id"), str) and db.session.get(UpstreamProvider, entry["id"]):
            raise ConfigError(f"This provider: the id {entry['id']!r} is taken")
    upstream = parse_entry({k: v for k, v in entry.items() if v is not None}, "This provider")
    assert upstream is not None
    if row is None:
        row = UpstreamProvider(id=upstream.id, enabled=True)
        db.session.add(row)
    row.issuer = upstream.issuer
    row.client_id = upstream.client_id
    row.client_secret = seal(upstream.client_secret)
    row.label = upstream.label
    row.scopes = " ".join(upstream.scopes)
    row.username_claim = upstream.username_claim
    row.groups_claim = upstream.groups_claim
    row.trust_email_verified = upstream.trust_email_verified
    row.updated_at = utcnow()
    return row


def changed() -> None:
    """After a commit: this process sees the change at once (the others within
    CLIENT_CACHE_SECONDS)."""
    _connectors().invalidate()


def _connectors() -> RedirectConnectors:
    return current_app.extensions["idp.redirect_connectors"]
