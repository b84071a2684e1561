"""Every setting of the service, with its development default; set any of them as IDP_<KEY>."""

from __future__ import annotations

import os
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration cannot be used; the message names the setting."""


class Config:
    """Defaults serve development. Each attribute is read from the environment as IDP_<NAME>.

    Values from the environment are JSON-decoded when they parse as JSON (Flask's
    ``from_prefixed_env``): ``IDP_PORT=8443`` is an int, ``IDP_DEBUG=true`` a bool. Text
    settings (`text_settings`: secrets, names, URLs) are taken as typed instead: a password
    ``123456789012`` or ``"quoted"`` stays that password.
    """

    # "development" or "production"; production refuses insecure defaults at start.
    ENV = "development"
    # Production refuses each of these unless its IDP_ALLOW_INSECURE_* says otherwise, and
    # then logs an error at every start: directory certificates not verified
    # (LDAP_TLS_INSECURE_SKIP_VERIFY), ldap:// without StartTLS, an SMTP login without TLS,
    # argon2id below OWASP's minimums, a SECRET_KEY or KEY_ENCRYPTION_KEY of little entropy.
    ALLOW_INSECURE_LDAP_TLS = False
    ALLOW_INSECURE_LDAP_PLAINTEXT = False
    ALLOW_INSECURE_SMTP = False
    ALLOW_INSECURE_ARGON2 = False
    ALLOW_INSECURE_SECRET_KEY = False
    # Flask debug mode (interactive debugger): never in production.
    DEBUG = False
    # Signs sessions, CSRF tokens and remember-me cookies. Unset: a random key kept in
    # instance/secret_key (development only).
    SECRET_KEY: str | None = None
    # Public base URL of this service: the tokens' issuer (`iss`) and the base of the links
    # in e-mails.
    ISSUER = "https://localhost:5000"
    # Where `python idp.py` listens.
    HOST = "localhost"
    PORT = 5000
    # Where the production server (`make serve`, identity/serve.py) listens, plain HTTP for
    # the TLS proxy in front: host:port or [IPv6]:port.
    BIND = "127.0.0.1:8000"
    # Its worker processes, each answering one request at a time. 0: one per CPU core.
    WORKERS = 0
    # SQLAlchemy URL. Unset: SQLite at instance/idp.sqlite3. PostgreSQL:
    # postgresql+psycopg://user:password@host/dbname
    DATABASE_URL: str | None = None
    # Folder for the local CA, TLS certificate and keys (relative to the project).
    CERTS_DIR = "certs"
    # The first administrator, created by `flask setup` (the container's entry command) when
    # the database has no administrator; never printed. The password is read only then:
    # from ADMIN_PASSWORD, or from the file ADMIN_PASSWORD_FILE names (a Docker secret).
    ADMIN_USERNAME: str | None = None
    ADMIN_EMAIL: str | None = None
    ADMIN_PASSWORD: str | None = None
    ADMIN_PASSWORD_FILE: str | None = None
    # Whether anyone may create an account at /register.
    REGISTRATION_ENABLED = True
    # Password policy.
    PASSWORD_MIN_LENGTH = 12
    PASSWORD_MAX_LENGTH = 1024
    # argon2id parameters (OWASP: m=19 MiB, t=2, p=1). Hashes made with other parameters
    # are re-hashed at the next successful sign-in.
    ARGON2_MEMORY_COST = 19456  # KiB
    ARGON2_TIME_COST = 2
    ARGON2_PARALLELISM = 1
    # Password connectors tried in order at /login. Unset: ["ldap", "local"] when
    # LDAP_URL is set, else ["local"].
    PASSWORD_CONNECTORS: list[str] | None = None
    # "Remember me" cookie lifetime, in seconds (14 days).
    REMEMBER_COOKIE_DURATION = 14 * 24 * 3600
    # Lifetime of a signed-in session without "remember me", in seconds (12 hours).
    SESSION_LIFETIME = 12 * 3600
    # Password reset links expire after this many seconds.
    PASSWORD_RESET_MAX_AGE = 30 * 60
    # Registration mails a link that verifies the address; until it is opened the address
    # is unverified (apps see email_verified=false, no social sign-in joins the account).
    REGISTRATION_EMAIL_VERIFICATION = True
    # Who must use a second factor (an authenticator app or a passkey): "none", "admins"
    # (administrators, also by directory group) or "all". Covered people without one enrol
    # right after their first factor.
    MFA_REQUIRED = "admins"
    # E-mail verification links expire after this many seconds (24 hours).
    EMAIL_VERIFICATION_MAX_AGE = 24 * 3600
    # Strict-Transport-Security max-age in seconds (0 sends no header).
    HSTS_MAX_AGE = 365 * 24 * 3600
    # Largest accepted request body, in bytes.
    MAX_CONTENT_LENGTH = 64 * 1024
    # Outgoing mail. No MAIL_SERVER: messages are written to the log instead.
    MAIL_SERVER: str | None = None
    MAIL_PORT = 587
    MAIL_USE_STARTTLS = True
    MAIL_USE_SSL = False
    MAIL_USERNAME: str | None = None
    MAIL_PASSWORD: str | None = None
    MAIL_SENDER = "Identity <no-reply@localhost>"
    MAIL_TIMEOUT = 10
    # The name people see on every page (header, window title) and in every e-mail.
    BRAND_NAME = "Identity"
    # A logo beside the name: an https:// URL or a path under /static/ (a file in
    # identity/static). Unset: the name alone.
    BRAND_LOGO_URL: str | None = None
    # Accent colour (links, main buttons) as #rrggbb. Unset: the built-in blue. Made darker
    # or lighter where needed so that text stays readable in light and dark mode.
    BRAND_ACCENT: str | None = None
    # Log level of the service's own logger.
    LOG_LEVEL = "INFO"
    # "text" for people, "json" for log collectors: one JSON object per line with the
    # request id (also returned as the X-Request-ID header).
    LOG_FORMAT = "text"
    # Bearer token a Prometheus scraper sends to /metrics. Unset: /metrics answers 404.
    METRICS_TOKEN: str | None = None

    # Token signing keys. Private keys are encrypted in the database with a key derived from
    # this (32+ characters), or from SECRET_KEY when unset. Changing it makes stored keys
    # unreadable: rotate first.
    KEY_ENCRYPTION_KEY: str | None = None
    # Algorithms with a key each: RS256, ES256, EdDSA.
    SIGNING_ALGORITHMS = ["RS256", "ES256", "EdDSA"]
    # Seconds a retired key stays in the JWKS; at least the longest lifetime of a signed token.
    KEY_RETENTION = 24 * 3600

    # OpenID Connect provider: lifetimes in seconds. Codes are single use and short-lived;
    # access tokens are signed JWTs that apps may verify offline until they expire.
    CODE_LIFETIME = 60
    ACCESS_TOKEN_LIFETIME = 10 * 60
    ID_TOKEN_LIFETIME = 10 * 60
    # Every refresh gives a new refresh token valid this long; each is used once.
    REFRESH_TOKEN_LIFETIME = 30 * 24 * 3600
    # Seconds one back-channel logout delivery may take in all (connection, TLS, request and
    # answer), not per read: a slow app is cut off then and retried later with backoff.
    BACKCHANNEL_LOGOUT_TIMEOUT = 5
    # Seconds each worker keeps a registered app in memory instead of reading it for every
    # token request. A change made in one process (rotated secret, deleted app) applies
    # there at once and in the other workers and nodes within this time; 0 reads every time.
    CLIENT_CACHE_SECONDS = 5

    # Brute-force protection. This many failed sign-ins for one username or e-mail address
    # (NFKC-case-folded, whether or not an account has it) within LOCKOUT_WINDOW seconds lock
    # it for LOCKOUT_DURATION seconds...
    LOCKOUT_ACCOUNT_FAILURES = 5
    # ...and this many from one client address lock that address, whatever the username.
    # Generous: an office behind one NAT address shares it.
    LOCKOUT_IP_FAILURES = 50
    LOCKOUT_WINDOW = 15 * 60
    LOCKOUT_DURATION = 15 * 60
    # Token endpoint: requests per client (`limits` notation, "100/second;2000/minute");
    # a public app's users all share its client's budget.
    TOKEN_RATE_LIMIT = "100/second"
    # Token endpoint: failed client authentications per client address; beyond, the address
    # gets 429 until the window frees.
    TOKEN_FAILURE_RATE_LIMIT = "30/minute"
    # Password checks per client address, right or wrong (sign-in, an admin's confirmation,
    # a password change): each costs an argon2 hash or a directory bind. Beyond: 429.
    PASSWORD_CHECK_RATE_LIMIT = "60/minute"
    # Accounts created at /register per client address. Beyond: 429.
    REGISTRATION_RATE_LIMIT = "10/hour"
    # Password reset requests per client address. Beyond: 429.
    RESET_REQUEST_RATE_LIMIT = "20/hour"
    # Reset e-mails per target address. Beyond, the page says the same as always and no mail
    # leaves: it never tells whether the address has an account.
    RESET_EMAIL_RATE_LIMIT = "5/hour"
    # Where the counters live: redis://[:password@]host:port/db, shared by every process and
    # node. Unset: each process counts in its own memory (development, one process).
    REDIS_URL: str | None = None
    # Prefix of every key in Redis (several services may share one server).
    REDIS_KEY_PREFIX = "idp"
    # Seconds to wait for Redis; when it does not answer, counting goes on in memory.
    REDIS_TIMEOUT = 0.5
    # Reverse proxies in front that append to X-Forwarded-For/-Proto (nginx: 1). 0: the
    # client address is the TCP peer and the headers are ignored.
    TRUSTED_PROXIES = 0

    # Forward authentication (docs/forward-auth.md): the parent domain, such as example.org,
    # of the sites that nginx, Caddy or Traefik protect by asking /forward-auth. Its own
    # cookie is set for this domain, so this service's host (IDP_ISSUER) must be under it.
    # Unset: forward authentication is off.
    FORWARD_AUTH_COOKIE_DOMAIN: str | None = None

    # Company directory (LDAP). One or more URLs (ldap:// or ldaps://), tried in order.
    LDAP_URL: str | list[str] | None = None
    # Upgrade ldap:// connections with StartTLS.
    LDAP_START_TLS = False
    # CA certificates (PEM) that the directory's certificate must chain to. Unset: the
    # system's trust store.
    LDAP_CA_FILE: str | None = None
    # Turns certificate verification off. Never in production: anyone on the path can read
    # every password. Logged as an error at every start.
    LDAP_TLS_INSECURE_SKIP_VERIFY = False
    # Service account for searching; unset with LDAP_ANONYMOUS_SEARCH=true searches anonymously.
    LDAP_BIND_DN: str | None = None
    LDAP_BIND_PASSWORD: str | None = None
    LDAP_ANONYMOUS_SEARCH = False
    # Search-then-bind: where people live, and the filter ({username} is escaped).
    LDAP_USER_BASE: str | None = None
    LDAP_USER_FILTER = "(uid={username})"
    # Direct bind instead of a search, e.g. uid={username},ou=people,dc=example,dc=org
    # ({username} is escaped as a DN value).
    LDAP_USER_DN_TEMPLATE: str | None = None
    # Seconds to wait for a connection and for each answer.
    LDAP_CONNECT_TIMEOUT = 5
    LDAP_READ_TIMEOUT = 5
    # Connections kept open per process for searches, and for checking passwords.
    LDAP_POOL_SIZE = 4
    # Attribute names: stable id (objectGUID for Active Directory), username, e-mail, name.
    LDAP_ID_ATTRIBUTE = "entryUUID"
    LDAP_USERNAME_ATTRIBUTE = "uid"
    LDAP_EMAIL_ATTRIBUTE = "mail"
    LDAP_NAME_ATTRIBUTE = "displayName"
    # Whether the directory's e-mail addresses count as verified.
    LDAP_EMAIL_VERIFIED = True
    # Groups: a search under LDAP_GROUP_BASE ({dn} and {username} are escaped), nested
    # groups followed; or, with LDAP_GROUP_BASE unset, the user's memberOf attribute.
    LDAP_GROUP_BASE: str | None = None
    LDAP_GROUP_FILTER = "(|(member={dn})(uniqueMember={dn})(memberUid={username}))"
    LDAP_GROUP_NAME_ATTRIBUTE = "cn"
    LDAP_MEMBEROF_ATTRIBUTE = "memberOf"
    LDAP_NESTED_GROUPS = True
    # Members of this group are administrators of this service: its full DN, such as
    # cn=idp-admins,ou=groups,dc=example,dc=org (compared as a DN, whatever the case/spacing).
    LDAP_ADMIN_GROUP: str | None = None
    # Every sign-in of an account linked to the directory (whatever the method, and an app's
    # sign-in through an open session), every refresh-token grant and every admin console
    # page read its directory entry again when the last reading is older than this
    # (seconds): a person deleted or locked there is disabled here, groups follow. Also run
    # `flask --app idp ldap sync` from cron for accounts that do none of these.
    LDAP_RECHECK_SECONDS = 300

    # Social sign-in (Flask-Dance's own names). A provider's button appears on the login
    # page when both its client id and secret are set.
    FACEBOOK_OAUTH_CLIENT_ID: str | None = None
    FACEBOOK_OAUTH_CLIENT_SECRET: str | None = None
    GOOGLE_OAUTH_CLIENT_ID: str | None = None
    GOOGLE_OAUTH_CLIENT_SECRET: str | None = None
    TWITTER_OAUTH_CLIENT_ID: str | None = None
    TWITTER_OAUTH_CLIENT_SECRET: str | None = None
    GITHUB_OAUTH_CLIENT_ID: str | None = None
    GITHUB_OAUTH_CLIENT_SECRET: str | None = None
    # Provider endpoints; point them at an emulator for tests and staging.
    FACEBOOK_AUTHORIZATION_URL = "https://www.facebook.com/dialog/oauth"
    FACEBOOK_TOKEN_URL = "https://graph.facebook.com/oauth/access_token"
    FACEBOOK_API_BASE_URL = "https://graph.facebook.com/"
    GOOGLE_AUTHORIZATION_URL = "https://accounts.google.com/o/oauth2/v2/auth"
    GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
    GOOGLE_API_BASE_URL = "https://www.googleapis.com/"
    TWITTER_AUTHORIZATION_URL = "https://x.com/i/oauth2/authorize"
    TWITTER_TOKEN_URL = "https://api.x.com/2/oauth2/token"
    TWITTER_API_BASE_URL = "https://api.x.com/"
    GITHUB_AUTHORIZATION_URL = "https://github.com/login/oauth/authorize"
    GITHUB_TOKEN_URL = "https://github.com/login/oauth/access_token"
    GITHUB_API_BASE_URL = "https://api.github.com/"
    # Seconds to wait for any answer from a provider.
    SOCIAL_TIMEOUT = 10
    # Link a new social sign-in to the existing account with the same e-mail address, only
    # when the provider asserts the address is verified and the account's own address was
    # verified here. Off: people connect from /account.
    SOCIAL_AUTO_LINK_VERIFIED_EMAIL = False
    # CA certificates (PEM) for provider endpoints (an emulator with its own CA). Unset: the
    # system's trust store.
    SOCIAL_CA_FILE: str | None = None
    # Upstream OpenID Connect providers, any number: a JSON list of objects with "id",
    # "issuer", "client_id", "client_secret", "label" and optionally "scopes",
    # "username_claim", "groups_claim", "trust_email_verified", "enabled"
    # (identity/settings/upstreams.py). Their calls use SOCIAL_TIMEOUT and SOCIAL_CA_FILE.
    OIDC_UPSTREAMS: list = []


def text_settings() -> tuple[str, ...]:
    """The settings whose values are text (annotated `str` or `str | None`, or a text
    default): the environment's value is the value, never decoded as JSON."""
    hints = typing.get_type_hints(Config)
    names = []
    for name in dir(Config):
        if not name.isupper():
            continue
        hint = hints.get(name)
        if hint is None:
            text = isinstance(getattr(Config, name), str)
        else:
            text = hint is str or set(typing.get_args(hint)) == {str, type(None)}
        if text:
            names.append(name)
    return tuple(names)


def load(app: Any, overrides: dict[str, Any] | None = None) -> None:
    """Fill app.config from Config, the IDP_* environment and overrides; derive the rest."""
    # Imported here, not at the top: identity/__init__ imports this module.
    from identity.settings.brand import brand_settings
    from identity.settings.files import instance_secret_key, private_dir, private_file, sqlite_file
    from identity.settings.first_admin import admin_settings
    from identity.settings.forward_auth import forward_auth_settings
    from identity.settings.ldap import ldap_settings
    from identity.settings.production import (
        insecure_production_settings,
        refuse_insecure_production,
    )
    from identity.settings.rate_limits import throttle_settings
    from identity.settings.server import server_settings
    from identity.settings.upstreams import upstream_settings

    app.config.from_object(Config)
    app.config.from_prefixed_env("IDP")
    for key in text_settings():
        if (typed := os.environ.get(f"IDP_{key}")) is not None:
            app.config[key] = typed
    if overrides:
        app.config.update(overrides)
    cfg = app.config
    admin_settings(cfg)
    instance = Path(app.instance_path)

    if cfg["ENV"] not in ("development", "production"):
        raise ConfigError(f"IDP_ENV must be 'development' or 'production', not {cfg['ENV']!r}")
    if cfg["ENV"] == "production":
        refuse_insecure_production(cfg)
    if not cfg.get("SECRET_KEY"):
        cfg["SECRET_KEY"] = instance_secret_key(instance)

    if not cfg.get("DATABASE_URL"):
        private_dir(instance)
        cfg["DATABASE_URL"] = f"sqlite:///{instance / 'idp.sqlite3'}"
    if (database := sqlite_file(cfg["DATABASE_URL"])) and database.parent.is_dir():
        # Created here, before SQLite would create it world-readable (its -wal and -shm
        # files take the database file's mode).
        private_file(database)
    cfg["SQLALCHEMY_DATABASE_URI"] = cfg["DATABASE_URL"]
    # Liveness checks at checkout: identity.database (only after a connection sat idle).
    cfg["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": False}
    cfg["ISSUER"] = str(cfg["ISSUER"]).rstrip("/")
    cfg["CERTS_DIR"] = str(Path(app.root_path).parent / cfg["CERTS_DIR"])
    for key in (
        "LDAP_CONNECT_TIMEOUT",
        "LDAP_READ_TIMEOUT",
        "LDAP_POOL_SIZE",
        "KEY_RETENTION",
        "PASSWORD_MIN_LENGTH",
        "PASSWORD_MAX_LENGTH",
        "REMEMBER_COOKIE_DURATION",
        "SESSION_LIFETIME",
        "PASSWORD_RESET_MAX_AGE",
        "EMAIL_VERIFICATION_MAX_AGE",
        "PORT",
        "HSTS_MAX_AGE",
        "ARGON2_MEMORY_COST",
        "ARGON2_TIME_COST",
        "ARGON2_PARALLELISM",
        "CODE_LIFETIME",
        "ACCESS_TOKEN_LIFETIME",
        "ID_TOKEN_LIFETIME",
        "REFRESH_TOKEN_LIFETIME",
        "BACKCHANNEL_LOGOUT_TIMEOUT",
        "CLIENT_CACHE_SECONDS",
        "LOCKOUT_ACCOUNT_FAILURES",
        "LOCKOUT_IP_FAILURES",
        "LOCKOUT_WINDOW",
        "LOCKOUT_DURATION",
        "TRUSTED_PROXIES",
        "LDAP_RECHECK_SECONDS",
    ):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 0:
            raise ConfigError(f"IDP_{key} must be a whole number, not {cfg[key]!r}")
    if cfg["LOG_FORMAT"] not in ("text", "json"):
        raise ConfigError(f"IDP_LOG_FORMAT must be text or json, not {cfg['LOG_FORMAT']!r}")
    if cfg["METRICS_TOKEN"] is not None and len(str(cfg["METRICS_TOKEN"])) < 32:
        raise ConfigError("IDP_METRICS_TOKEN must be at least 32 characters")
    ldap_settings(cfg)
    throttle_settings(cfg)
    brand_settings(cfg, app.static_folder)
    forward_auth_settings(cfg)
    server_settings(cfg)
    # What production was told to accept anyway; create_app logs each as an error.
    cfg["INSECURE_ALLOWED"] = (
        insecure_production_settings(cfg) if cfg["ENV"] == "production" else []
    )
    unknown_algs = set(cfg["SIGNING_ALGORITHMS"]) - {"RS256", "ES256", "EdDSA"}
    if unknown_algs or not cfg["SIGNING_ALGORITHMS"]:
        raise ConfigError(
            f"IDP_SIGNING_ALGORITHMS: use RS256, ES256 and/or EdDSA, not "
            f"{sorted(unknown_algs) or 'nothing'}"
        )
    if not isinstance(cfg["REGISTRATION_EMAIL_VERIFICATION"], bool):
        raise ConfigError(
            "IDP_REGISTRATION_EMAIL_VERIFICATION must be true or false, "
            f"not {cfg['REGISTRATION_EMAIL_VERIFICATION']!r}"
        )
    if cfg["MFA_REQUIRED"] not in ("none", "admins", "all"):
        raise ConfigError(
            f"IDP_MFA_REQUIRED must be none, admins or all, not {cfg['MFA_REQUIRED']!r}"
        )
    if cfg["EMAIL_VERIFICATION_MAX_AGE"] < 60:
        raise ConfigError("IDP_EMAIL_VERIFICATION_MAX_AGE must be at least 60 seconds")
    for key in ("CODE_LIFETIME", "ACCESS_TOKEN_LIFETIME", "ID_TOKEN_LIFETIME"):
        if cfg[key] == 0:
            raise ConfigError(f"IDP_{key} must be at least 1 second")
    longest = max(cfg["ACCESS_TOKEN_LIFETIME"], cfg["ID_TOKEN_LIFETIME"])
    if cfg["KEY_RETENTION"] < longest:
        raise ConfigError(
            f"IDP_KEY_RETENTION ({cfg['KEY_RETENTION']} s) must be at least the longest token "
            f"lifetime ({longest} s): a retired key must verify every token it signed"
        )
    if cfg["KEY_ENCRYPTION_KEY"] is not None and len(str(cfg["KEY_ENCRYPTION_KEY"])) < 32:
        raise ConfigError("IDP_KEY_ENCRYPTION_KEY must be at least 32 characters")
    for provider in ("FACEBOOK", "GOOGLE", "TWITTER", "GITHUB"):
        key = f"{provider}_OAUTH_CLIENT_ID"
        if cfg[key] is not None:  # from_prefixed_env reads a numeric app id as an int
            cfg[key] = str(cfg[key])
    if not isinstance(cfg["SOCIAL_TIMEOUT"], int | float) or cfg["SOCIAL_TIMEOUT"] <= 0:
        raise ConfigError(
            f"IDP_SOCIAL_TIMEOUT must be a positive number of seconds, "
            f"not {cfg['SOCIAL_TIMEOUT']!r}"
        )
    upstream_settings(cfg)
    if not 8 <= cfg["PASSWORD_MIN_LENGTH"] <= cfg["PASSWORD_MAX_LENGTH"] <= 4096:
        raise ConfigError(
            "IDP_PASSWORD_MIN_LENGTH must be at least 8 and at most "
            "IDP_PASSWORD_MAX_LENGTH (at most 4096)"
        )

    # Cookies: __Host- names bind them to this exact origin over HTTPS.
    cfg.update(
        SESSION_COOKIE_NAME="__Host-session",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=cfg["SESSION_LIFETIME"]),
        REMEMBER_COOKIE_NAME="__Host-remember",
        REMEMBER_COOKIE_SECURE=True,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_DURATION=timedelta(seconds=cfg["REMEMBER_COOKIE_DURATION"]),
        # A login page left open for hours must still work: the token lives with the session.
        WTF_CSRF_TIME_LIMIT=None,
    )
