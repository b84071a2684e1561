"""The connector registry: every way of signing in this service offers, in one place.

create_app() builds one `Registry` and keeps it at `app.extensions["idp.connectors"]`;
everything else asks it (`registry()`): the login form for the password connectors in
IDP_PASSWORD_CONNECTORS order, the login and account pages for the redirect connectors'
buttons, the funnel for a connector's provisioning policy, every page for a label.

A connector is an object with these attributes (see base.PasswordConnector and
base.RedirectConnector for the methods of each kind):

    id            stable name, stored with every linked identity: never change it
    label         what people read ("Google", "Company directory")
    icon          the mark drawn on its button: templates/icons/<icon>.svg, or None
    kind          "password" (the login form's username and password) or "redirect"
    provisioning  what a first sign-in of an identity nobody has linked yet does:
                  DIRECTORY  creates the account, and every sign-in rewrites its name,
                             e-mail address and groups (the directory vouches for people)
                  EMAIL      creates the account when its e-mail address belongs to nobody;
                             joins the account with that address only when both addresses
                             are verified and IDP_SOCIAL_AUTO_LINK_VERIFIED_EMAIL is on
                  EXISTING   nothing: only identities already linked to an account sign in
    asserts_groups  optional, False when absent: the connector's Identity carries the groups
                  the person is in now, and every sign-in with it sets the account's groups
                  (unless the account is linked to the directory, which decides them)

To add a redirect connector (an upstream that sends the browser back with a result):

1. write a class with the attributes above and `login_url(next_url)` and
   `init_app(app, handler)`: `init_app` registers its routes; when a person starts, its
   login route calls `handler.start(self)`; its callback turns the upstream's answer into
   an `Identity` (or a `RedirectFailure`) and returns `handler.finish(self, result)`, the
   response to send. It renders no page, stores no token and never calls the funnel:
   the handler (identity.auth.finalize) does that, the same for every connector;
2. `registry.add(connector)` from create_app's `_init_connectors`, after checking its
   settings; import its module there, when it is configured: its libraries then stay out
   of the workers that do not use it (tests/test_serve.py lists those it checks);
3. add it to the connector contract test (tests/test_connector_contract.py), which runs
   every registered redirect connector through the same cases.

An OAuth 2.0 provider that Flask-Dance knows is only data: see identity.connectors.providers.

Connectors that change while the service runs (the upstream OpenID providers stored from the
admin console) come from a source (`registry.add_source(source)`): an object whose
`connectors()` gives the current list (it decides how often it reads them again) and whose
`labels()` names every connector it knows, enabled or not. The registry asks it whenever it
is iterated; a connector of the same id added with `add` wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from flask import current_app

PASSWORD = "password"
REDIRECT = "redirect"

DIRECTORY = "directory"
EMAIL = "email"
EXISTING = "existing"

KINDS = (PASSWORD, REDIRECT)
ICON = re.compile(r"[a-z0-9-]{1,40}")
POLICIES = (DIRECTORY, EMAIL, EXISTING)

# Labels of ways of signing in that are not configured connectors: an account's passkeys
# ("passkey", identity.auth.passkeys), and, in the audit log, a password refused before
# any one connector could say whose it was. Connectors add their own.
OTHER_LABELS = {"passkey": "Passkey", "password": "Password (any)"}
# The directory connector's (identity.connectors.ldap) label, known where ldap3 is not
# loaded (no directory configured): its links and audit events keep their name.
LDAP_LABEL = "Company directory"


class Registry:
    """The configured connectors, by id, in the order they were added."""

    def __init__(
        self,
        known_labels: dict[str, str] | None = None,
        known_policies: dict[str, str] | None = None,
    ) -> None:
        self._connectors: dict[str, Any] = {}
        # Connectors this service knows but that are not configured (a provider's client id
        # removed): their links and audit events still need a name.
        self._known = {**OTHER_LABELS, **(known_labels or {})}
        # Policies that hold when the connector is not on the login form: the directory's
        # links are read again (identity.oidc.recheck) whenever IDP_LDAP_URL is set.
        self._policies = dict(known_policies or {})
        self._sources: list[Any] = []

    def add(self, connector: Any) -> None:
        for attribute in ("id", "label", "icon", "kind", "provisioning"):
            if not hasattr(connector, attribute):
                raise TypeError(f"connector {connector!r} has no {attribute}")
        if connector.kind not in KINDS or connector.provisioning not in POLICIES:
            raise ValueError(
                f"connector {connector.id}: kind {connector.kind!r} must be one of {KINDS}, "
                f"provisioning {connector.provisioning!r} one of {POLICIES}"
            )
        if connector.icon is not None and not ICON.fullmatch(connector.icon):
            raise ValueError(f"connector {connector.id}: icon {connector.icon!r} is not a name")
        if connector.id in self._connectors or connector.id in OTHER_LABELS:
            raise ValueError(f"two connectors have the id {connector.id!r}")
        self._connectors[connector.id] = connector

    def add_source(self, source: Any) -> None:
        """Connectors read while the service runs (see the module's docstring)."""
        self._sources.append(source)

    def sources(self) -> list[Any]:
        return list(self._sources)

    def __iter__(self) -> Iterator[Any]:
        found = dict(self._connectors)
        for source in self._sources:
            for connector in source.connectors():
                if connector.id not in found and connector.id not in OTHER_LABELS:
                    found[connector.id] = connector
        return iter(list(found.values()))

    def get(self, connector_id: str) -> Any | None:
        found = self._connectors.get(connector_id)
        if found is None and self._sources:
            found = next((c for c in self if c.id == connector_id), None)
        return found

    def password(self) -> list[Any]:
        """The login form's connectors, in the order it tries them."""
        return [c for c in self if c.kind == PASSWORD]

    def redirect(self) -> list[Any]:
        """The connectors with a button, in the order the buttons appear."""
        return [c for c in self if c.kind == REDIRECT]

    def redirect_ids(self) -> set[str]:
        return {c.id for c in self.redirect()}

    def provisioning(self, connector_id: str) -> str:
        """The connector's policy; for one not configured, its known policy or EXISTING."""
        connector = self.get(connector_id)
        if connector is not None:
            return connector.provisioning
        return self._policies.get(connector_id, EXISTING)

    def asserts_groups(self, connector_id: str) -> bool:
        """Whether the connector says, at every sign-in, which groups a person is in (its
        optional `asserts_groups` attribute): the account's groups then follow it."""
        return bool(getattr(self.get(connector_id), "asserts_groups", False))

    def ids_with(self, policy: str) -> set[str]:
        ids = {c.id for c in self if c.provisioning == policy}
        return ids | {i for i, p in self._policies.items() if p == policy and not self.get(i)}

    @property
    def labels(self) -> dict[str, str]:
        """Every name for a way of signing in, configured or not (pages, audit log)."""
        known = dict(self._known)
        for source in self._sources:
            known.update(source.labels())
        return {**known, **{c.id: c.label for c in self}}

    def label(self, connector_id: str) -> str:
        return self.labels.get(connector_id, connector_id)

    def close(self) -> None:
        """Release what connectors hold (directory connection pools)."""
        for connector in self:
            getattr(connector, "close", lambda: None)()


def registry(app: Any = None) -> Registry:
    """The registry of `app`, by default the current one."""
    return (app or current_app).extensions["idp.connectors"]


def label(connector_id: str) -> str:
    """A connector's label in the current app ("ldap" is "Company directory")."""
    return registry().label(connector_id)
