"""Running the service: /healthz (alive), /readyz (each dependency reported), Prometheus
metrics at /metrics (behind a bearer token), a request id on every request and response,
and log lines (text or JSON) that carry it, one line per record whatever the text logged."""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import time

from flask import Blueprint, Flask, current_app, g, has_request_context, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text

from identity.extensions import db
from identity.metrics import LATENCY

bp = Blueprint("ops", __name__)
log = logging.getLogger("identity.ops")

# An incoming X-Request-ID is kept when it looks like an id (a proxy's), else replaced.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
# What outside text (a provider's error_description, a username, an exception message) could
# use to forge a log line or rewrite a terminal: C0 and C1 controls (newline, carriage return,
# ESC...), DEL, Unicode line and paragraph separators, and bidirectional overrides.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


# -- health -----------------------------------------------------------------------------


@bp.get("/healthz")
def healthz():
    """Alive: the process answers. Nothing else is checked (that is /readyz)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready to serve: the database, Redis (when configured) and the directory (when
    configured) each answer. 503 when one does not, saying which."""
    # Anyone may ask: the answer names each failure's type only, the details are logged
    # and shown in the admin console.
    checks = {name: {k: v for k, v in c.items() if k != "detail"} for name, c in health().items()}
    ready = all(c["ok"] for c in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


def health(*, mail: bool = False) -> dict[str, dict]:
    """Each configured dependency checked now: the database, Redis, the directory, and with
    `mail` the SMTP server (a mail outage delays messages, it does not make the service
    unready). Each check is {"ok", "ms"} and, when it failed, "error" (the exception's type)
    and "detail" (its message, for administrators only)."""
    cfg = current_app.config
    probes = [("database", _database)]
    if cfg.get("REDIS_URL"):
        probes.append(("redis", _redis))
    if cfg["LDAP_URL"]:
        probes.append(("directory", _directory))
    if mail and cfg.get("MAIL_SERVER"):
        probes.append(("mail", _mail))
    return {name: _check(name, probe) for name, probe in probes}


def _check(name: str, probe) -> dict:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # any failure is the answer
        log.warning("readiness: %s failed: %s: %s", name, type(exc).__name__, exc)
        return {
            "ok": False,
            "error": type(exc).__name__,
            "detail": str(exc) or type(exc).__name__,
            "ms": _ms(started),
        }
    return {"ok": True, "ms": _ms(started)}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _database() -> None:
    db.session.execute(text("SELECT 1"))
    db.session.rollback()


def _redis() -> None:
    import redis

    client = redis.Redis.from_url(
        current_app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=2
    )
    try:
        client.ping()
    finally:
        client.close()


def _directory() -> None:
    """A directory server answers (with StartTLS when configured), the service account (when
    configured) binds, the user search base exists and the user filter parses."""
    from identity.connectors.ldap_connection import Settings
    from identity.connectors.ldap_probe import probe

    probe(Settings.from_config(current_app.config))


def _mail() -> None:
    """The SMTP server answers, with TLS and the login the settings ask for, and accepts a
    NOOP: what sending a message needs, without sending one."""
    import smtplib

    from identity import mail

    with mail.connect(current_app.config) as smtp:
        code, answer = smtp.noop()
        if code != 250:
            raise smtplib.SMTPResponseException(code, answer)


# -- metrics ------------------------------------------------------------------------------


@bp.get("/metrics")
def metrics():
    """Prometheus text format, for a scraper holding IDP_METRICS_TOKEN; 404 when unset."""
    token = current_app.config["METRICS_TOKEN"]
    if not token:
        return jsonify(error="not_found", error_description="Metrics are off."), 404
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        return (
            jsonify(error="invalid_token", error_description="Send the metrics token."),
            401,
            {"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # make serve: every worker writes its own files; this adds them up.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    return body, 200, {"Content-Type": CONTENT_TYPE_LATEST}


# -- request ids and logs -------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Every log record gets the request id (or "-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def escape_controls(text: str) -> str:
    """`text` with every character of _CONTROL written as an escape (\\n, \\x1b, \\u2028):
    printed, it stays on one line and changes nothing on a terminal."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def _escape_strings(value):
    if isinstance(value, str):
        return escape_controls(value)
    if isinstance(value, dict):
        return {k: _escape_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_strings(v) for v in value]
    return value


class TextFormatter(logging.Formatter):
    """One line per record: time, level, logger, request id, message (and the traceback,
    if any, on the same line), control characters escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        return escape_controls(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message; an audit event's
    message is itself JSON and is embedded as an object. Every string in it has its control
    characters escaped, so a collector that decodes it shows one line too."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.name == "identity.audit" and message.startswith("{"):
            entry["audit"] = json.loads(message)
        else:
            entry["message"] = message
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(_escape_strings(entry), ensure_ascii=True, default=str)


def install_logging(app: Flask) -> None:
    """The service's logger (Flask's app.logger too) writes to stderr, as JSON lines
    (IDP_LOG_FORMAT=json) or text lines, one per record."""
    logger = logging.getLogger("identity")
    logger.setLevel(app.config["LOG_LEVEL"])
    handler = next((h for h in logger.handlers if getattr(h, "_idp", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._idp = True
        handler.addFilter(RequestIdFilter())
        logger.addHandler(handler)
    json_lines = app.config["LOG_FORMAT"] == "json"
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    # Only this handler writes, escaped: a handler further up (alembic's fileConfig during
    # `flask db upgrade` adds one to the root logger) would print every line again, raw.
    # Tests let records reach pytest's capture.
    logger.propagate = bool(app.config["TESTING"])


def install(app: Flask) -> None:
    """Request ids and latency on every request; the ops endpoints."""

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        response.headers["X-Request-ID"] = g.get("request_id", "-")
        started = g.get("started")
        if started is not None:
            LATENCY.labels(request.endpoint or "none", request.method).observe(
                time.perf_counter() - started
            )
        return response

    install_logging(app)
    app.register_blueprint(bp)
