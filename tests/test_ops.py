"""Operating the service: liveness, readiness per dependency, metrics behind a token,
request ids, and JSON log lines."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from ldap_server import dead_url
from test_ldap import ldap_settings

from conftest import make_app
from identity.extensions import db

METRICS_TOKEN = "m" * 40


@pytest.fixture
def app_overrides() -> dict:
    return {"METRICS_TOKEN": METRICS_TOKEN}


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_reports_the_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "ready"
    assert response.json["checks"]["database"]["ok"] is True
    assert "directory" not in response.json["checks"]


def test_readyz_says_which_dependency_is_down(database_url, tmp_path, directory):
    app = make_app(database_url, tmp_path, **{**ldap_settings(directory), "LDAP_URL": dead_url()})
    with app.app_context():
        db.create_all()
    try:
        response = app.test_client().get("/readyz", base_url="https://localhost")
        assert response.status_code == 503
        checks = response.json["checks"]
        assert checks["database"]["ok"] is True
        assert checks["directory"]["ok"] is False and checks["directory"]["error"]
    finally:
        app.extensions["idp.connectors"].close()
        with app.app_context():
            db.engine.dispose()


def test_readyz_with_the_directory_up(database_url, tmp_path, directory):
    app = make_app(database_url, tmp_path, **ldap_settings(directory))
    try:
        response = app.test_client().get("/readyz", base_url="https://localhost")
        assert response.json["checks"]["directory"]["ok"] is True
    finally:
        app.extensions["idp.connectors"].close()
        with app.app_context():
            db.engine.dispose()


def test_metrics_need_the_token_and_count_sign_ins(client, browser, user):
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 401 and wrong.json["error"] == "invalid_token"
    browser.login(password="wrong password for alice")
    browser.login()
    body = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert body.status_code == 200
    text = body.get_data(as_text=True)
    assert 'idp_signins_total{method="local",outcome="success"}' in text
    assert 'idp_signins_total{method="password",outcome="failure"}' in text
    assert 'idp_request_seconds_bucket{endpoint="auth.login"' in text


def test_metrics_are_off_without_a_token(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    try:
        assert app.test_client().get("/metrics", base_url="https://localhost").status_code == 404
    finally:
        with app.app_context():
            db.engine.dispose()


def test_request_id_is_returned_and_a_sane_incoming_one_kept(client):
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 16
    kept = client.get("/healthz", headers={"X-Request-ID": "lb-1234abcd"})
    assert kept.headers["X-Request-ID"] == "lb-1234abcd"
    for bad in ("x", "a b c d e f g h", "<script>alert(1)</script>", "z" * 500):
        replaced = client.get("/healthz", headers={"X-Request-ID": bad})
        assert replaced.headers["X-Request-ID"] != bad


def test_json_logs_carry_the_request_id_and_embed_audit_events(database_url, tmp_path, capfd):
    from identity.ops import JsonFormatter, RequestIdFilter

    app = make_app(database_url, tmp_path, LOG_FORMAT="json")
    try:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        handler.addFilter(RequestIdFilter())
        records = []
        handler.emit = lambda record: records.append(handler.format(record))
        logging.getLogger("identity").addHandler(handler)
        with app.test_request_context(headers={"X-Request-ID": "req-12345678"}):
            from flask import g

            g.request_id = "req-12345678"
            logging.getLogger("identity.audit").info(json.dumps({"event": "signout", "user_id": 1}))
            logging.getLogger("identity.auth").warning("plain message")
        logging.getLogger("identity").removeHandler(handler)
        audit_line, plain_line = (json.loads(r) for r in records[-2:])
        assert audit_line["request_id"] == "req-12345678"
        assert audit_line["audit"] == {"event": "signout", "user_id": 1}
        assert plain_line["message"] == "plain message" and plain_line["level"] == "WARNING"
    finally:
        with app.app_context():
            db.engine.dispose()


def test_bad_log_format_is_a_config_error(database_url, tmp_path):
    from identity import ConfigError

    with pytest.raises(ConfigError, match="IDP_LOG_FORMAT"):
        make_app(database_url, tmp_path, LOG_FORMAT="xml")
    with pytest.raises(ConfigError, match="IDP_METRICS_TOKEN"):
        make_app(database_url, tmp_path, METRICS_TOKEN="short")


def test_text_and_json_lines_stay_one_line_with_tracebacks_and_control_characters():
    from identity.ops import JsonFormatter, RequestIdFilter, TextFormatter

    try:
        raise ValueError("user typed:\nFAKE ERROR line\x1b[31m")
    except ValueError:
        record = logging.getLogger("identity.test").makeRecord(
            "identity.test", logging.ERROR, __file__, 1, "got %r and %s", ("a", "b\rc"), None
        )
        record.exc_info = sys.exc_info()
    RequestIdFilter().filter(record)
    text_line = TextFormatter().format(record)
    assert "\n" not in text_line and "\r" not in text_line and "\x1b" not in text_line
    assert "got 'a' and b\\rc" in text_line and "[-]" in text_line
    assert "Traceback (most recent call last):\\n" in text_line
    assert "user typed:\\nFAKE ERROR line\\x1b[31m" in text_line
    record.exc_text = None  # formatted again, by the other formatter
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "got 'a' and b\\rc"
    assert "\n" not in entry["exception"] and "user typed:\\nFAKE" in entry["exception"]


def test_a_handler_on_the_root_logger_does_not_print_service_lines_again_raw(
    database_url, tmp_path
):
    """`flask db upgrade` runs alembic's fileConfig, which puts a handler on the root logger:
    the service's lines must still be written once, by its own escaping handler (whose
    escaping test_text_and_json_lines_stay_one_line... checks)."""
    import io

    app = make_app(database_url, tmp_path, TESTING=False)
    seen = io.StringIO()
    root_handler = logging.StreamHandler(seen)
    logging.getLogger().addHandler(root_handler)
    try:
        app.logger.warning("first line\nforged: admin signed in")
    finally:
        logging.getLogger().removeHandler(root_handler)
        logging.getLogger("identity").propagate = True  # as the other tests' apps have it
        with app.app_context():
            db.engine.dispose()
    assert seen.getvalue() == ""
