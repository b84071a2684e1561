"""Error pages: HTML for people, JSON for clients that ask for it; never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger("identity.errors")

MESSAGES = {
    400: "The request could not be understood.",
    401: "You need to sign in first.",
    403: "You are not allowed to do that.",
    404: "There is nothing at this address.",
    405: "This address does not accept that kind of request.",
    413: "The request is too large.",
    429: "Too many attempts. Wait a moment and try again.",
    500: "Something went wrong on our side. It has been logged; please try again.",
}
DATABASE_DOWN = "The service is briefly unavailable. Please try again in a few seconds."
CSRF_MESSAGE = (
    "This form has expired or was not sent from this site. Reload the page and try again."
)


# Endpoints for apps, not people: their errors are always JSON.
API_PATHS = frozenset(
    (
        "/token",
        "/introspect",
        "/revoke",
        "/userinfo",
        "/jwks.json",
        "/.well-known/openid-configuration",
        "/healthz",
        "/readyz",
        "/metrics",
    )
)


def wants_json() -> bool:
    if request.path in API_PATHS:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return (
        best == "application/json"
        and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )


def render_error(code: int, message: str | None = None, headers: dict | None = None):
    """The error response for `code`, as JSON or HTML depending on what the client accepts."""
    text = message or MESSAGES.get(code, "The request failed.")
    if wants_json():
        body = jsonify(error=_json_code(code), error_description=text)
        return body, code, headers or {}
    return render_template("errors/error.html", code=code, message=text), code, headers or {}


def _json_code(code: int) -> str:
    return {
        400: "invalid_request",
        401: "login_required",
        403: "access_denied",
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
        429: "too_many_requests",
        503: "temporarily_unavailable",
    }.get(code, "server_error")


def install(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError):
        log.info("CSRF check failed on %s: %s", request.path, exc.description)
        return render_error(400, CSRF_MESSAGE)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        headers = dict(exc.get_headers()) if exc.code == 405 else {}
        headers.pop("Content-Type", None)
        message = MESSAGES.get(exc.code or 500)
        return render_error(exc.code or 500, message, headers)

    @app.errorhandler(OperationalError)
    def _database_down(exc: OperationalError):
        # The database went away (restart, failover, network): nothing was stored by this
        # request; the pool reconnects (identity.database) for the next one.
        log.error("database unavailable on %s %s: %s", request.method, request.path, exc.orig)
        from identity.extensions import db

        db.session.rollback()
        return render_error(503, DATABASE_DOWN, {"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, HTTPException):
            return _http(exc)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render_error(InternalServerError.code)
