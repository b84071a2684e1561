"""The upstream OpenID providers added in the admin console: stored, their client secrets
encrypted (identity.secretbox), and the registry's source of their connectors, read from the
database again at most every IDP_CLIENT_CACHE_SECONDS. The connectors' module (Authlib's
client, requests: 6 MB a worker) is loaded when a provider is, not before."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from cryptography.fernet import InvalidToken
from flask import current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from config import ConfigError
from identity.connectors.registry import registry
from identity.extensions import db
from identity.models import UpstreamProvider
from identity.models.users import utcnow
from identity.secretbox import fernet
from identity.settings.upstreams import Upstream, parse_entry

if TYPE_CHECKING:
    from identity.connectors.oidc_upstream import UpstreamConnector

log = logging.getLogger("identity.oidc_upstream")

# HKDF's info: this key is for upstream client secrets only.
PURPOSE = b"idp oidc upstream client secret v1"


class StoredUpstreams:
    """The registry's source (identity.connectors.registry) of the stored providers: every
    process reads them again after CLIENT_CACHE_SECONDS, the process that made a change at
    once (changed())."""

    def __init__(self, app, handler):
        self.app = app
        self.handler = handler
        self._connectors: list[UpstreamConnector] = []
        self._labels: dict[str, str] = {}
        self._read_at: float | None = None
        self._lock = threading.Lock()
        self._ttl = app.config["CLIENT_CACHE_SECONDS"]
        # IDP_OIDC_UPSTREAMS' ids: an entry there wins over a stored one of the same id.
        self.fixed_ids = {up.id for up in app.config["OIDC_UPSTREAMS"]}
        # The routes exist even before any provider is stored (they cannot be added later).
        from identity.connectors import oidc_routes

        oidc_routes.register(app)

    def connectors(self) -> list[UpstreamConnector]:
        self._fresh()
        return list(self._connectors)

    def labels(self) -> dict[str, str]:
        """Every stored provider's label, enabled or not: its links and audit events."""
        self._fresh()
        return dict(self._labels)

    def trial_connector(self, upstream_id: str) -> UpstreamConnector | None:
        """A connector for a stored provider that is disabled, for an administrator's trial
        sign-in only (identity.auth.upstream_trial): built for this request, never listed."""
        row = db.session.get(UpstreamProvider, upstream_id)
        if row is None or row.enabled or row.id in self.fixed_ids:
            return None
        try:
            upstream = upstream_of(row)
        except (ConfigError, InvalidToken) as exc:
            log.error("stored upstream %s is not usable: %s", row.id, exc)
            return None
        from identity.connectors import oidc_upstream

        connector = oidc_upstream.connector(self.app.config, upstream)
        connector.init_app(self.app, self.handler)
        return connector

    def invalidate(self) -> None:
        self._read_at = None

    def _fresh(self) -> None:
        if not has_app_context() or current_app._get_current_object() is not self.app:
            return
        read_at = self._read_at
        if read_at is None or time.monotonic() - read_at >= self._ttl:
            self._reload()

    def _reload(self) -> None:
        with self._lock:
            started = time.monotonic()
            table = UpstreamProvider.__table__
            try:
                # A connection of its own: the registry is asked in the middle of requests,
                # whose session this read must neither flush nor roll back.
                with db.engine.connect() as connection:
                    rows = connection.execute(
                        select(table).order_by(table.c.created_at, table.c.id)
                    ).all()
            except SQLAlchemyError as exc:  # not upgraded yet, or the database is down
                log.error("stored upstream providers could not be read: %s", exc)
                self._read_at = started
                return
            old = {c.upstream: c for c in self._connectors}
            connectors, labels = [], {}
            for row in rows:
                labels[f"oidc-{row.id}"] = row.label
                if row.id in self.fixed_ids or not row.enabled:
                    continue  # the environment's entry of that id wins
                try:
                    upstream = upstream_of(row)
                except (ConfigError, InvalidToken) as exc:
                    log.error("stored upstream %s is not usable: %s", row.id, exc)
                    continue
                connector = old.get(upstream)
                if connector is None:
                    from identity.connectors import oidc_upstream

                    connector = oidc_upstream.connector(self.app.config, upstream)
                    connector.init_app(self.app, self.handler)
                connectors.append(connector)
            self._connectors, self._labels = connectors, labels
            self._read_at = started


def upstream_connectors() -> list[UpstreamConnector]:
    """The upstream providers people can sign in with now, in the order of their buttons."""
    from identity.connectors.oidc_upstream import UpstreamConnector

    return [c for c in registry() if isinstance(c, UpstreamConnector)]


def source() -> StoredUpstreams:
    return next(s for s in registry().sources() if isinstance(s, StoredUpstreams))


# -- the stored providers ---------------------------------------------------------------


def seal(secret: str) -> str:
    return fernet(PURPOSE).encrypt(secret.encode()).decode()


def unseal(token: str) -> str:
    return fernet(PURPOSE).decrypt(token.encode()).decode()


def entry_of(row: Any, secret: str | None = None) -> dict[str, Any]:
    """The row (an UpstreamProvider or a row of its table) as an IDP_OIDC_UPSTREAMS entry."""
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


def upstream_of(row: Any) -> Upstream:
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
        if entry.get("id") in source().fixed_ids:
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
    source().invalidate()
