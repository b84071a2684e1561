"""The Prometheus counters: sign-ins and token grants (fed by audit events) and request latency."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SIGNINS = Counter(
    "idp_signins_total", "Sign-in attempts by method and outcome.", ["method", "outcome"]
)
GRANTS = Counter("idp_token_grants_total", "Tokens issued by grant type.", ["grant_type"])
LATENCY = Histogram(
    "idp_request_seconds",
    "Request latency by endpoint.",
    ["endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def count_event(type_: str, data: dict) -> None:
    """Audit events feed the counters (identity.audit calls this for every event)."""
    if type_ in ("signin.success", "signin.failure", "signin.locked"):
        outcome = type_.split(".", 1)[1]
        SIGNINS.labels(str(data.get("method", "unknown"))[:32], outcome).inc()
    elif type_ in ("token.issued", "token.refreshed"):
        GRANTS.labels(str(data.get("grant_type", "unknown"))[:40]).inc()
