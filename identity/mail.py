"""Outgoing e-mail over SMTP, sent off the request thread; with no server, to the log."""

from __future__ import annotations

import logging
import smtplib
import ssl
from concurrent.futures import Future, ThreadPoolExecutor, wait
from email.message import EmailMessage

from flask import current_app

log = logging.getLogger("identity.mail")
# Sending after the response keeps "address exists" and "unknown address" equally fast.
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mail")
_pending: set[Future] = set()


def send(to: str, subject: str, body: str) -> Future:
    """Queue one plain-text message; failures are logged, never shown to the visitor.

    The subject is prefixed with IDP_BRAND_NAME ("Acme: Reset your password") and the body
    signed with it and IDP_ISSUER, so that people know which service wrote to them."""
    cfg = current_app.config
    brand = cfg["BRAND_NAME"]
    msg = EmailMessage()
    msg["From"] = cfg["MAIL_SENDER"]
    msg["To"] = to
    msg["Subject"] = f"{brand}: {subject}"
    msg.set_content(f"{body.rstrip()}\n\n-- \n{brand}\n{cfg['ISSUER']}\n")
    settings = {k: cfg[k] for k in cfg if k.startswith("MAIL_")}
    future = _executor.submit(_deliver, msg, settings)
    _pending.add(future)
    future.add_done_callback(_pending.discard)
    return future


def flush(timeout: float = 10) -> None:
    """Wait (at most `timeout` seconds) until the messages queued so far are delivered or
    have failed: before the SMTP server they go to stops (tests, a graceful shutdown)."""
    wait(list(_pending), timeout=timeout)


def _deliver(msg: EmailMessage, cfg: dict) -> None:
    if not cfg.get("MAIL_SERVER"):
        # Development without SMTP: the message, link included, goes to the log.
        log.warning(
            "IDP_MAIL_SERVER is not set; message to %s not sent:\n%s", msg["To"], msg.get_content()
        )
        return
    try:
        with connect(cfg) as smtp:
            smtp.send_message(msg)
        log.info("mail sent to %s: %s", msg["To"], msg["Subject"])
    except (OSError, smtplib.SMTPException) as exc:
        log.error("mail to %s failed: %s: %s", msg["To"], type(exc).__name__, exc)


def connect(cfg: dict) -> smtplib.SMTP:
    """An SMTP session with the MAIL_* settings' server, over TLS when they say so, logged
    in when they name a user. Raises OSError or smtplib.SMTPException."""
    context = ssl.create_default_context()
    if cfg["MAIL_USE_SSL"]:
        smtp = smtplib.SMTP_SSL(
            cfg["MAIL_SERVER"], cfg["MAIL_PORT"], timeout=cfg["MAIL_TIMEOUT"], context=context
        )
    else:
        smtp = smtplib.SMTP(cfg["MAIL_SERVER"], cfg["MAIL_PORT"], timeout=cfg["MAIL_TIMEOUT"])
    try:
        if cfg["MAIL_USE_STARTTLS"] and not cfg["MAIL_USE_SSL"]:
            smtp.starttls(context=context)
        if cfg.get("MAIL_USERNAME"):
            smtp.login(cfg["MAIL_USERNAME"], cfg["MAIL_PASSWORD"] or "")
    except BaseException:
        smtp.close()
        raise
    return smtp
