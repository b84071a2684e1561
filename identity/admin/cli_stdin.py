"""A password read from standard input (an argument would show in `ps` and the history)."""

from __future__ import annotations

import sys

import click


def read_password() -> str:
    """The first line of standard input, without its line ending; refused unless UTF-8."""
    data = sys.stdin.buffer.readline()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException("the password on standard input is not UTF-8") from None
    return text.rstrip("\r\n")
