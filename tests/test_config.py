"""Settings: defaults, IDP_* environment, and refusing insecure production settings."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

import config
from config import Config, ConfigError
from identity import create_app

ROOT = Path(__file__).resolve().parent.parent
GOOD_KEY = "9f" * 32
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


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    settings = [k for k in vars(Config) if k.isupper()]
    assert settings
    missing = [k for k in settings if f"IDP_{k}" not in readme]
    assert not missing, f"README lacks {missing}"


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
