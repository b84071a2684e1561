"""An upstream OpenID provider's discovery document read and checked, and the HTTP session
every call to the upstream goes through."""

from __future__ import annotations

from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session

from identity.connectors.base import RedirectFailure
from identity.one_at_a_time import waiting_elsewhere
from identity.settings.upstreams import Upstream

# What is taken from a discovery document. Authlib hands the metadata to its requests
# session as keyword arguments, so a document with "verify": false or "proxies" would
# otherwise configure our HTTP client.
METADATA_KEYS = (
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "id_token_signing_alg_values_supported",
    "token_endpoint_auth_methods_supported",
    "code_challenge_methods_supported",
)
# Signature algorithms accepted on ID tokens: asymmetric only (the keys come from jwks_uri).
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class UpstreamSession(OAuth2Session):
    """Authlib's requests session with the CA and the timeout on every request: requests
    lets REQUESTS_CA_BUNDLE override a session's own `verify`, not a request's. While it
    waits on the upstream, the worker answers other requests (waiting_elsewhere): the caller
    holds no lock of its own across it."""

    def request(self, method, url, withhold_token=False, auth=None, **kwargs):
        kwargs.setdefault("verify", self.verify)
        kwargs.setdefault("allow_redirects", False)
        with waiting_elsewhere():
            return super().request(method, url, withhold_token=withhold_token, auth=auth, **kwargs)


def discover(upstream: Upstream, *, verify: str | bool, timeout: float) -> dict[str, Any]:
    """The upstream's discovery document, checked, reduced to METADATA_KEYS (raises
    RedirectFailure)."""
    up = upstream
    url = up.issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with UpstreamSession(verify=verify, default_timeout=timeout) as s:
            resp = s.request("GET", url, withhold_token=True)
        if resp.status_code != 200:
            raise bad_metadata(f"discovery answered {resp.status_code}")
        metadata = resp.json()
    except requests.RequestException as exc:
        raise network_failure(exc) from exc
    except ValueError as exc:
        raise bad_metadata(f"discovery is not JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise bad_metadata("discovery is not a JSON object")
    if metadata.get("issuer") != up.issuer:
        raise RedirectFailure(
            "wrong_issuer",
            f"discovery says issuer {metadata.get('issuer')!r}, not {up.issuer!r}",
        )
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = metadata.get(key)
        if not isinstance(value, str) or not value.startswith("https://"):
            raise bad_metadata(f"{key} is not an https URL: {value!r}")
    userinfo = metadata.get("userinfo_endpoint")
    if userinfo is not None and not (isinstance(userinfo, str) and userinfo.startswith("https://")):
        metadata.pop("userinfo_endpoint")
    methods = metadata.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise bad_metadata("the upstream does not support PKCE S256")
    algs = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    algs = [a for a in algs if a in ALGORITHMS] if isinstance(algs, list) else []
    if not algs:
        raise bad_metadata("no asymmetric ID token signing algorithm")
    metadata["id_token_signing_alg_values_supported"] = algs
    return {k: metadata[k] for k in METADATA_KEYS if k in metadata}


def bad_metadata(detail: str) -> RedirectFailure:
    return RedirectFailure("bad_metadata", detail)


def network_failure(exc: requests.RequestException) -> RedirectFailure:
    reason = "timeout" if isinstance(exc, requests.Timeout) else "provider_unreachable"
    return RedirectFailure(reason, str(exc))
