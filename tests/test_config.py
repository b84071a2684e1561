"""Settings: defaults, IDP_* environment, and refusing insecure production settings."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

import config
from config import Config, ConfigError
from identity import create_app
from identity.settings.production import MIN_SECRET_KEY_BITS, estimated_entropy_bits

ROOT = Path(__file__).resolve().parent.parent
GOOD_KEY = "5d1c0e8f3a7b94c2e6f0a1d8b3c7e9f24a6d0b8c1e3f5a7d9b2c4e6f8a0b1c3d"
PROD = {"ENV": "production", "SECRET_KEY": GOOD_KEY, "ISSUER": "https://id.example.org"}
LDAP = {
    "LDAP_URL": "ldap://127.0.0.1:1",
    "LDAP_BIND_DN": "cn=x",
    "LDAP_BIND_PASSWORD": "p" * 12,
    "LDAP_USER_BASE": "dc=x",
}


def build(tmp_path, monkeypatch, **env) -> Flask:
    for key in list(os.environ):
        if key.startswith("IDP_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(f"IDP_{key}", value)
    app = Flask("t", instance_path=str(tmp_path / "instance"), root_path=str(ROOT / "identity"))
    config.load(app)
    return app


def test_development_defaults(tmp_path, monkeypatch):
    app = build(tmp_path, monkeypatch)
    cfg = app.config
    assert cfg["ISSUER"] == "https://localhost:5000"
    assert cfg["HOST"] == "localhost" and cfg["PORT"] == 5000
    assert cfg["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/instance/idp.sqlite3"
    assert (cfg["ARGON2_MEMORY_COST"], cfg["ARGON2_TIME_COST"], cfg["ARGON2_PARALLELISM"]) == (
        19456,
        2,
        1,
    )
    assert cfg["PASSWORD_MIN_LENGTH"] == 12 and cfg["PASSWORD_MAX_LENGTH"] == 1024
    assert cfg["PASSWORD_RESET_MAX_AGE"] == 1800
    assert cfg["SESSION_COOKIE_SECURE"] and cfg["SESSION_COOKIE_HTTPONLY"]
    assert cfg["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert cfg["DEBUG"] is False


def test_secret_key_is_kept_in_instance_so_restarts_keep_sessions(tmp_path, monkeypatch):
    first = build(tmp_path, monkeypatch).config["SECRET_KEY"]
    second = build(tmp_path, monkeypatch).config["SECRET_KEY"]
    assert first == second and len(first) == 64
    path = tmp_path / "instance" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_environment_overrides_with_json_values(tmp_path, monkeypatch):
    cfg = build(
        tmp_path,
        monkeypatch,
        PORT="8443",
        ISSUER="https://id.example.org/",
        DATABASE_URL="postgresql+psycopg://u@db/idp",
        PASSWORD_MIN_LENGTH="16",
        REMEMBER_COOKIE_DURATION="3600",
        REGISTRATION_ENABLED="false",
    ).config
    assert cfg["PORT"] == 8443
    assert cfg["ISSUER"] == "https://id.example.org"
    assert cfg["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@db/idp"
    assert cfg["PASSWORD_MIN_LENGTH"] == 16
    assert cfg["REMEMBER_COOKIE_DURATION"].total_seconds() == 3600
    assert cfg["REGISTRATION_ENABLED"] is False


@pytest.mark.parametrize(
    "key,typed",
    [
        ("LDAP_BIND_PASSWORD", "123456789012"),  # JSON would make it the number 123456789012
        ("MAIL_PASSWORD", '"quoted"'),  # JSON would drop the quotes: another password
        ("GOOGLE_OAUTH_CLIENT_SECRET", "true"),  # JSON would make it True
        ("FACEBOOK_OAUTH_CLIENT_ID", "0123456789"),  # a number would lose its leading 0
        ("BRAND_NAME", "null"),  # JSON would make it None
    ],
)
def test_text_settings_are_read_as_typed(tmp_path, monkeypatch, key, typed):
    # Secrets, names and ids are text: Flask's JSON reading of the environment would change a
    # password that looks like a number, a boolean, null or a quoted string into another one.
    assert build(tmp_path, monkeypatch, **{key: typed}).config[key] == typed


def test_settings_of_other_types_still_read_json(tmp_path, monkeypatch):
    cfg = build(tmp_path, monkeypatch, TRUSTED_PROXIES="1", PASSWORD_CONNECTORS='["local"]').config
    assert cfg["TRUSTED_PROXIES"] == 1 and cfg["PASSWORD_CONNECTORS"] == ["local"]


def documented_settings() -> dict[str, str]:
    """docs/configuration.md's table rows: each IDP_ name of a row's first cell, with the
    row's default cell."""
    rows = {}
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| `IDP_") and len(cells) == 3:
            for name in re.findall(r"`IDP_([A-Z0-9_]+)`", cells[0]):
                rows[name] = cells[1]
    return rows


def test_every_setting_has_a_row_in_docs_configuration():
    documented = documented_settings()
    settings = [k for k in vars(Config) if k.isupper()]
    assert settings
    missing = [k for k in settings if k not in documented]
    assert not missing, f"docs/configuration.md has no row for {missing}"


def test_docs_configuration_documents_only_settings_that_are_read():
    """A row for a setting that no longer exists would send people after nothing: each is
    in Config, or read by the Makefile or the tests."""
    elsewhere = "".join(p.read_text() for p in [ROOT / "Makefile", *ROOT.glob("tests/*.py")])
    stale = [
        k for k in documented_settings() if not hasattr(Config, k) and f"IDP_{k}" not in elsewhere
    ]
    assert not stale, f"docs/configuration.md documents settings nothing reads: {stale}"


def test_docs_configuration_defaults_are_configs_defaults():
    """Where the table gives a default as one literal, it is Config's value."""
    checked = 0
    for name, cell in documented_settings().items():
        literal = re.fullmatch(r"`([^`]*)`(?: \(.*\))?", cell)
        value = getattr(Config, name, None)
        if literal is None or value is None:
            continue
        text = literal.group(1).replace("\\|", "|")
        expected = json.dumps(value) if isinstance(value, (bool, list)) else str(value)
        assert text == expected, f"IDP_{name}: docs say {text}, config.py has {expected}"
        checked += 1
    assert checked > 50


@pytest.mark.parametrize(
    "env,message",
    [
        ({}, "IDP_SECRET_KEY must be set"),
        ({"SECRET_KEY": "changeme"}, "IDP_SECRET_KEY is a default or too short"),
        ({"SECRET_KEY": "short-key"}, "IDP_SECRET_KEY is a default or too short"),
        (
            {"SECRET_KEY": GOOD_KEY, "ISSUER": "http://id.example.org"},
            "IDP_ISSUER must be an https://",
        ),
        (
            {"SECRET_KEY": GOOD_KEY, "ISSUER": "https://id.example.org", "DEBUG": "true"},
            "IDP_DEBUG must be off",
        ),
    ],
)
def test_production_refuses_insecure_defaults(tmp_path, monkeypatch, env, message):
    with pytest.raises(ConfigError, match=message):
        build(tmp_path, monkeypatch, ENV="production", **env)
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_production_starts_with_real_settings(tmp_path, monkeypatch):
    cfg = build(
        tmp_path,
        monkeypatch,
        ENV="production",
        SECRET_KEY=GOOD_KEY,
        ISSUER="https://id.example.org",
    ).config
    assert cfg["SECRET_KEY"] == GOOD_KEY


@pytest.mark.parametrize(
    "key,estimate",
    [("a" * 32, 0), ("ab" * 16, 2), ("9f" * 32, 2), ("changeme" * 4, 22), ("Ab1!" * 10, 8)],
)
def test_production_refuses_a_secret_key_of_little_entropy(tmp_path, monkeypatch, key, estimate):
    assert round(estimated_entropy_bits(key)) == estimate
    with pytest.raises(ConfigError) as refused:
        build(tmp_path, monkeypatch, **{**PROD, "SECRET_KEY": key})
    message = str(refused.value)
    assert "IDP_SECRET_KEY looks guessable" in message and "secrets.token_hex(32)" in message
    assert "IDP_ALLOW_INSECURE_SECRET_KEY=true" in message
    with pytest.raises(ConfigError, match="IDP_KEY_ENCRYPTION_KEY looks guessable"):
        build(tmp_path, monkeypatch, **{**PROD, "KEY_ENCRYPTION_KEY": key})
    allowed = build(
        tmp_path, monkeypatch, **{**PROD, "SECRET_KEY": key, "ALLOW_INSECURE_SECRET_KEY": "true"}
    )
    assert "IDP_SECRET_KEY looks guessable" in allowed.config["INSECURE_ALLOWED"][0]


def test_random_keys_of_32_hex_characters_or_more_pass(tmp_path, monkeypatch):
    for _ in range(20_000):
        assert estimated_entropy_bits(secrets.token_hex(16)) >= MIN_SECRET_KEY_BITS
    for key in (secrets.token_hex(16), secrets.token_hex(32), secrets.token_urlsafe(32)):
        app = build(tmp_path, monkeypatch, **{**PROD, "SECRET_KEY": key})
        assert app.config["INSECURE_ALLOWED"] == []


LDAPS = {**LDAP, "LDAP_URL": "ldaps://ldap.example.org"}
SMTP = {"MAIL_SERVER": "smtp.example.org", "MAIL_USERNAME": "idp", "MAIL_PASSWORD": "p" * 20}


@pytest.mark.parametrize(
    "env,allow,message",
    [
        (
            {**LDAPS, "LDAP_TLS_INSECURE_SKIP_VERIFY": "true"},
            "ALLOW_INSECURE_LDAP_TLS",
            "IDP_LDAP_TLS_INSECURE_SKIP_VERIFY is on",
        ),
        (
            {**LDAP, "LDAP_URL": "ldaps://a.example.org ldap://b.example.org"},
            "ALLOW_INSECURE_LDAP_PLAINTEXT",
            "IDP_LDAP_URL ldap://b.example.org sends passwords in clear: set "
            "IDP_LDAP_START_TLS=true",
        ),
        (
            {**SMTP, "MAIL_USE_STARTTLS": "false"},
            "ALLOW_INSECURE_SMTP",
            "IDP_MAIL_USERNAME logs in to the SMTP server without TLS",
        ),
        (
            {"ARGON2_MEMORY_COST": "1024", "ARGON2_TIME_COST": "1"},
            "ALLOW_INSECURE_ARGON2",
            "IDP_ARGON2_MEMORY_COST=1024 (KiB) with IDP_ARGON2_TIME_COST=1 is below OWASP",
        ),
        (
            {"ARGON2_MEMORY_COST": "19455", "ARGON2_TIME_COST": "2"},
            "ALLOW_INSECURE_ARGON2",
            "IDP_ARGON2_MEMORY_COST=19455",
        ),
        (
            {"ARGON2_MEMORY_COST": "47103", "ARGON2_TIME_COST": "1"},
            "ALLOW_INSECURE_ARGON2",
            "IDP_ARGON2_MEMORY_COST=47103",
        ),
    ],
)
def test_production_refuses_insecure_transport_and_hashing_unless_allowed_by_name(
    tmp_path, monkeypatch, env, allow, message
):
    with pytest.raises(ConfigError) as refused:
        build(tmp_path, monkeypatch, **PROD, **env)
    assert message in str(refused.value)
    assert f"set IDP_{allow}=true to accept it" in str(refused.value)
    allowed = build(tmp_path, monkeypatch, **PROD, **env, **{allow: "true"})
    (logged,) = allowed.config["INSECURE_ALLOWED"]
    assert logged.startswith(f"IDP_{allow} is set: ") and message in logged
    # The same settings are fine in development.
    assert build(tmp_path, monkeypatch, **env).config["INSECURE_ALLOWED"] == []


@pytest.mark.parametrize(
    "env",
    [
        LDAPS,
        {**LDAP, "LDAP_START_TLS": "true"},
        {**SMTP, "MAIL_USE_STARTTLS": "true"},
        {**SMTP, "MAIL_USE_STARTTLS": "false", "MAIL_USE_SSL": "true"},
        {"MAIL_SERVER": "localhost", "MAIL_USE_STARTTLS": "false"},  # no login to protect
        {"ARGON2_MEMORY_COST": "47104", "ARGON2_TIME_COST": "1"},
        {"ARGON2_MEMORY_COST": "7168", "ARGON2_TIME_COST": "5"},
        {"ARGON2_MEMORY_COST": "65536", "ARGON2_TIME_COST": "3", "ARGON2_PARALLELISM": "4"},
    ],
)
def test_production_starts_with_secure_transport_and_hashing(tmp_path, monkeypatch, env):
    assert build(tmp_path, monkeypatch, **PROD, **env).config["INSECURE_ALLOWED"] == []


def test_what_production_was_allowed_is_logged_as_an_error_at_every_start(tmp_path, caplog):
    settings = {
        **PROD,
        **SMTP,
        "MAIL_USE_STARTTLS": False,
        "ALLOW_INSECURE_SMTP": True,
        "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
    }
    # A production app's lines do not propagate (its own handler writes them): listen on the
    # service's logger itself.
    logging.getLogger("identity").addHandler(caplog.handler)
    try:
        for _ in range(2):
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="identity.config"):
                create_app(settings)
            (record,) = [r for r in caplog.records if r.name == "identity.config"]
            assert record.levelno == logging.ERROR
            assert record.getMessage().startswith(
                "IDP_ALLOW_INSECURE_SMTP is set: IDP_MAIL_USERNAME"
            )
    finally:
        logging.getLogger("identity").removeHandler(caplog.handler)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"ENV": "staging"}, "IDP_ENV must be 'development' or 'production'"),
        ({"PORT": '"abc"'}, "IDP_PORT must be a whole number"),
        ({"PASSWORD_MIN_LENGTH": "4"}, "IDP_PASSWORD_MIN_LENGTH must be at least 8"),
        ({"ARGON2_TIME_COST": "-1"}, "IDP_ARGON2_TIME_COST must be a whole number"),
        (
            {**LDAP, "LDAP_USER_FILTER": "(&(uid={username})(ou={dept}))"},
            "IDP_LDAP_USER_FILTER: unknown placeholder {dept}",
        ),
        (
            {"LDAP_URL": "ldap://127.0.0.1:1", "LDAP_USER_DN_TEMPLATE": "uid={user},dc=x"},
            "IDP_LDAP_USER_DN_TEMPLATE: unknown placeholder {user}",
        ),
        ({**LDAP, "LDAP_GROUP_FILTER": "(member=})"}, "IDP_LDAP_GROUP_FILTER: Single '}'"),
        (
            {**LDAP, "LDAP_GROUP_FILTER": "(cn=staff)"},
            "IDP_LDAP_GROUP_FILTER: must contain {dn} or {username}",
        ),
    ],
)
def test_invalid_settings_name_the_setting(tmp_path, monkeypatch, env, message):
    with pytest.raises(ConfigError, match=message):
        build(tmp_path, monkeypatch, **env)


def test_unknown_password_connector_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="IDP_PASSWORD_CONNECTORS names unknown connectors"):
        create_app(
            {
                "PASSWORD_CONNECTORS": ["local", "kerberos"],
                "SECRET_KEY": GOOD_KEY,
                "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
            }
        )


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "import idp"],
        ["-m", "flask", "--app", "idp", "user", "list"],
        ["-m", "gunicorn", "--check-config", "idp:app"],
    ],
)
def test_refusal_is_one_clear_line_not_a_traceback(argv):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(IDP_ENV="production", IDP_SECRET_KEY=GOOD_KEY, IDP_ISSUER="http://id.example.org")
    r = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode != 0
    assert "idp: configuration error: IDP_ISSUER must be an https:// URL" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "value,suggested",
    [
        ("idp-admins", "cn=idp-admins,ou=groups,dc=x"),
        ("cn=idp-admins", "cn=idp-admins,ou=groups,dc=x"),
        ("not a dn, at all", "cn=not a dn\\, at all,ou=groups,dc=x"),
    ],
)
def test_admin_group_by_name_is_refused_with_the_dn_to_write(
    tmp_path, monkeypatch, value, suggested
):
    with pytest.raises(ConfigError) as refused:
        build(
            tmp_path, monkeypatch, **LDAP, LDAP_GROUP_BASE="ou=groups,dc=x", LDAP_ADMIN_GROUP=value
        )
    assert str(refused.value).startswith(
        f"IDP_LDAP_ADMIN_GROUP must be the group's full DN, such as {suggested} "
    )


def test_admin_group_dn_is_kept_normalised(tmp_path, monkeypatch):
    cfg = build(
        tmp_path, monkeypatch, **LDAP, LDAP_ADMIN_GROUP="CN=IdP-Admins, OU=Groups,DC=Example"
    ).config
    assert cfg["LDAP_ADMIN_GROUP"] == "cn=idp-admins,ou=groups,dc=example"


def test_a_dn_template_needs_a_way_to_read_entries_again(tmp_path, monkeypatch):
    template = {"LDAP_URL": "ldap://127.0.0.1:1", "LDAP_USER_DN_TEMPLATE": "uid={username},dc=x"}
    with pytest.raises(ConfigError, match="IDP_LDAP_BIND_DN must be set .* deleted or locked"):
        build(tmp_path, monkeypatch, **template)
    assert build(tmp_path, monkeypatch, **template, LDAP_ANONYMOUS_SEARCH="true")


def test_recheck_seconds_is_a_whole_number(tmp_path, monkeypatch):
    assert build(tmp_path, monkeypatch).config["LDAP_RECHECK_SECONDS"] == 300
    with pytest.raises(ConfigError, match="IDP_LDAP_RECHECK_SECONDS must be a whole number"):
        build(tmp_path, monkeypatch, LDAP_RECHECK_SECONDS="-5")
