"""`flask --app idp user …` and `certs create`: JSON out, a specific error for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import PASSWORD
from identity.extensions import db
from identity.models import User

ROOT = Path(__file__).resolve().parent.parent


def run(app, *args, input: str | bytes = ""):
    return app.test_cli_runner().invoke(args=list(args), input=input)


def users(app):
    with app.app_context():
        return [
            (u.username, u.email, u.is_admin, u.disabled) for u in db.session.scalars(select(User))
        ]


def test_user_create_prints_json_and_the_account_signs_in(app, browser):
    r = run(
        app,
        "user",
        "create",
        "--username",
        "Dana",
        "--email",
        "dana@example.org",
        "--password-stdin",
        "--admin",
        input=PASSWORD + "\n",
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["username"] == "dana" and out["email"] == "dana@example.org" and out["admin"] is True
    assert out["sign_in_methods"] == ["local"] and "password" not in r.output.lower()
    assert browser.login("dana", PASSWORD).status_code == 302


@pytest.mark.parametrize(
    "args,stdin,message",
    [
        (["--username", "a b", "--email", "x@example.org"], PASSWORD, "--username: use 2 to 64"),
        (["--username", "x" * 65, "--email", "x@example.org"], PASSWORD, "--username: use 2 to 64"),
        (["--username", "eve", "--email", "not-an-address"], PASSWORD, "--email:"),
        (["--username", "eve", "--email", "e\x00@example.org"], PASSWORD, "--email: not a valid"),
        (
            ["--username", "eve", "--email", "eve@example.org"],
            "short",
            "Use at least 12 characters",
        ),
        (["--username", "eve", "--email", "eve@example.org"], "", "Use at least 12 characters"),
        (["--username", "eve", "--email", "eve@example.org"], "x" * 10_240, "Use at most 1024"),
        (["--username", "eve", "--email", "eve@example.org"], "evE@example.org", "e-mail address"),
        (["--username", "eve", "--email", "eve@example.org"], "Password1234!", "most common ones"),
        (["--username", "eve", "--email", "eve@example.org"], "eve.2024.2025", "your username"),
        (
            ["--username", "eve", "--email", "eve@example.org"],
            "pass\x07word long enough",
            "control characters",
        ),
        (
            ["--username", "eve", "--email", "eve@example.org"],
            b"\xff\xfe long password here",
            "not UTF-8",
        ),
        (
            ["--username", "ALICE", "--email", "new@example.org"],
            PASSWORD,
            "username 'alice' is taken",
        ),
        (["--username", "newbie", "--email", "ALICE@example.org"], PASSWORD, "already uses"),
        (
            ["--username", "eve", "--email", "eve@example.org", "--name", "n" * 300],
            PASSWORD,
            "--name: at most 200",
        ),
    ],
)
def test_user_create_bad_input(app, user, args, stdin, message):
    before = users(app)
    data = stdin + ("\n" if isinstance(stdin, str) else b"\n")
    r = run(app, "user", "create", *args, "--password-stdin", input=data)
    assert r.exit_code == 1
    assert message in r.output
    assert "Traceback" not in r.output
    assert users(app) == before


def test_user_create_needs_password_stdin(app):
    r = run(app, "user", "create", "--username", "eve", "--email", "eve@example.org")
    assert r.exit_code == 2 and "--password-stdin" in r.output


def test_user_list_table_and_json(app, user):
    r = run(app, "user", "list")
    assert r.exit_code == 0 and "alice" in r.output and "USERNAME" in r.output
    r = run(app, "user", "list", "--json")
    (line,) = r.output.strip().splitlines()
    assert json.loads(line)["username"] == "alice"


def test_user_disable_ends_sessions(app, browser, user):
    browser.login()
    r = run(app, "user", "disable", "ALICE")
    assert r.exit_code == 0 and "alice is disabled" in r.output
    assert browser.get("/account").status_code == 302
    assert browser.login().status_code == 403
    r = run(app, "user", "disable", "alice")
    assert r.exit_code == 0 and "already disabled" in r.output


def test_user_disable_unknown(app, user):
    r = run(app, "user", "disable", "nobody")
    assert r.exit_code == 1 and "no such user: nobody" in r.output
    assert users(app)[0][3] is False


def test_certs_create_command(app, tmp_path):
    r = run(app, "certs", "create")
    assert r.exit_code == 0 and "wrote" in r.output
    before = (tmp_path / "certs" / "server.pem").read_bytes()
    r = run(app, "certs", "create")
    assert "exist" in r.output
    assert (tmp_path / "certs" / "server.pem").read_bytes() == before
    r = run(app, "certs", "create", "--force")
    assert (tmp_path / "certs" / "server.pem").read_bytes() != before


def test_real_command_line(tmp_path):
    """The commands as a person types them: `flask --app idp …` in a fresh process."""
    env = {
        **os.environ,
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path}/cli.sqlite3",
        "IDP_SECRET_KEY": "k" * 64,
        "IDP_ARGON2_MEMORY_COST": "1024",
        "IDP_ARGON2_TIME_COST": "1",
    }
    flask = [sys.executable, "-m", "flask", "--app", "idp"]
    up = subprocess.run(
        [*flask, "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stderr
    made = subprocess.run(
        [
            *flask,
            "user",
            "create",
            "--username",
            "erin",
            "--email",
            "erin@example.org",
            "--password-stdin",
        ],
        cwd=ROOT,
        env=env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["username"] == "erin"
    dup = subprocess.run(
        [
            *flask,
            "user",
            "create",
            "--username",
            "erin",
            "--email",
            "other@example.org",
            "--password-stdin",
        ],
        cwd=ROOT,
        env=env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
    )
    assert dup.returncode == 1 and "Error: the username 'erin' is taken" in dup.stderr
    assert "Traceback" not in dup.stderr
