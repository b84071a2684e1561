"""The connector registry and providers as data: what a connector must carry, labels for
connectors that are not configured, and how a profile becomes an Identity."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from identity.connectors.providers import PROVIDERS, to_identity
from identity.connectors.registry import Registry


def connector(id="c", kind="redirect", provisioning="email", icon=None):
    return SimpleNamespace(id=id, label=id.title(), icon=icon, kind=kind, provisioning=provisioning)


def test_a_connector_must_carry_its_description():
    registry = Registry()
    with pytest.raises(TypeError, match="no provisioning"):
        registry.add(SimpleNamespace(id="x", label="X", icon=None, kind="redirect"))
    with pytest.raises(ValueError, match="kind"):
        registry.add(connector(kind="magic"))
    with pytest.raises(ValueError, match="provisioning"):
        registry.add(connector(provisioning="everyone"))
    with pytest.raises(ValueError, match="icon"):
        registry.add(connector(icon="../../base"))


def test_ids_are_unique_and_cannot_take_a_method_name():
    registry = Registry()
    registry.add(connector("google"))
    for taken in ("google", "passkey", "password"):
        with pytest.raises(ValueError, match="id"):
            registry.add(connector(taken))


def test_kinds_order_and_policies():
    registry = Registry(
        known_labels={"ldap": "Company directory"}, known_policies={"ldap": "directory"}
    )
    registry.add(connector("local", kind="password", provisioning="existing"))
    registry.add(connector("github"))
    registry.add(connector("google"))
    assert [c.id for c in registry.password()] == ["local"]
    assert [c.id for c in registry.redirect()] == ["github", "google"]
    assert registry.provisioning("google") == "email"
    assert registry.provisioning("ldap") == "directory"  # not on the login form, still known
    assert registry.provisioning("facebook") == "existing"  # not configured: links only
    assert registry.ids_with("directory") == {"ldap"}
    assert registry.label("ldap") == "Company directory" and registry.label("passkey") == "Passkey"
    assert registry.label("unknown-thing") == "unknown-thing"


class Source:
    """A source of connectors that change while the service runs (stored providers)."""

    def __init__(self):
        self.current: list = []
        self.known: dict[str, str] = {}

    def connectors(self) -> list:
        return list(self.current)

    def labels(self) -> dict[str, str]:
        return dict(self.known)


def test_a_source_adds_connectors_as_they_change():
    registry = Registry()
    registry.add(connector("oidc-corp"))  # IDP_OIDC_UPSTREAMS' entry
    source = Source()
    registry.add_source(source)
    assert [c.id for c in registry.redirect()] == ["oidc-corp"]
    partner = connector("oidc-partner")
    source.current = [partner, connector("oidc-corp"), connector("passkey")]
    source.known = {"oidc-partner": "Partner ID", "oidc-old": "Old SSO"}
    # The fixed connector wins its id; a method's name is never a connector's.
    assert [c.id for c in registry.redirect()] == ["oidc-corp", "oidc-partner"]
    assert registry.get("oidc-partner") is partner and registry.get("passkey") is None
    assert registry.provisioning("oidc-partner") == "email"
    assert registry.label("oidc-partner") == "Oidc-Partner"  # the connector's own label
    assert registry.label("oidc-old") == "Old SSO"  # disabled: still named
    source.current = []
    assert registry.get("oidc-partner") is None
    assert registry.provisioning("oidc-partner") == "existing"


@pytest.mark.parametrize(
    "provider,body,expected",
    [
        ("google", {"sub": "1", "email": "a@b.test", "email_verified": "true"}, ("a", False)),
        ("google", {"sub": "1", "email": "@b.test", "name": "Ann"}, ("Ann", False)),
        ("twitter", {"data": {"id": "7", "username": "x7"}}, ("x7", False)),
        ("twitter", {"data": "not an object"}, None),
        ("facebook", {"id": ""}, None),
        ("facebook", {"id": {"nested": 1}}, None),
        ("github", {"id": 0, "login": None}, ("github-user", False)),
        ("github", {"id": False}, None),
    ],
)
def test_profiles_are_read_defensively(provider, body, expected):
    identity = to_identity(PROVIDERS[provider], body, emails=[])
    if expected is None:
        assert identity is None
    else:
        assert (identity.username, identity.email_verified) == expected
        assert identity.amr == ("fed",) and identity.connector == provider


def test_every_failure_reason_has_its_page():
    from identity.auth.finalize import FAILURES
    from identity.connectors.base import RedirectFailure

    assert set(FAILURES) == set(RedirectFailure.REASONS)
    assert {"wrong_issuer", "bad_metadata", "bad_id_token", "bad_userinfo", "bad_callback"} <= set(
        FAILURES
    )
