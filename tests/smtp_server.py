"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives: the `smtp` fixture."""

from __future__ import annotations

import time

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message
from ports import listen_port

from identity import mail


class Inbox(Message):
    def __init__(self):
        super().__init__()
        self.messages = []

    def handle_message(self, message):
        self.messages.append(message)

    def wait(self, n=1, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages


@pytest.fixture
def smtp():
    """(controller, inbox): the server's port is controller.port."""
    inbox = Inbox()
    # A busy machine can take more than aiosmtpd's default 5 s to start the server thread.
    controller = Controller(inbox, hostname="127.0.0.1", port=listen_port(), ready_timeout=30)
    controller.start()
    yield controller, inbox
    # Messages are sent off the request thread: let those still on their way arrive before
    # the server stops (else they fail mid-session, and the sockets left open warn later).
    mail.flush()
    controller.stop()
