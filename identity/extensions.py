"""Extensions, created unbound here and attached to the app in create_app()."""

import flask_login
from flask import current_app
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import MetaData

# Named constraints, so migrations can alter them on SQLite and PostgreSQL alike.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Objects keep their values after a commit instead of being read again at the next access:
# a code flow re-read its client, code and account rows after each of its commits.
db = SQLAlchemy(
    metadata=MetaData(naming_convention=NAMING), session_options={"expire_on_commit": False}
)


class LoginManager(flask_login.LoginManager):
    """Flask-Login whose remember-me cookie is the app's own server-side token: the cookie's
    value goes to the `remember_loader` callback, and Flask-Login never writes or believes
    its own cookie (a signed user id, valid until the secret key changes)."""

    _remember_callback = None

    def remember_loader(self, callback):
        """Register `callback(cookie_value) -> user | None`, which restores a session."""
        self._remember_callback = callback
        return callback

    def _load_user_from_remember_cookie(self, cookie):
        return self._remember_callback(cookie) if self._remember_callback else None

    def _set_cookie(self, response):
        pass  # login_user(remember=True) sets nothing: identity.auth.remember writes it

    def _clear_cookie(self, response):
        # With the attributes it was set with: browsers ignore a __Host- cookie without
        # Secure, deletions included (Flask-Login's own sends only name, domain and path).
        response.delete_cookie(
            current_app.config["REMEMBER_COOKIE_NAME"], **remember_cookie_attributes()
        )


def remember_cookie_attributes() -> dict:
    """Path, domain and flags of the remember-me cookie, for setting and deleting it alike."""
    config = current_app.config
    return {
        "path": config.get("REMEMBER_COOKIE_PATH") or "/",
        "domain": config.get("REMEMBER_COOKIE_DOMAIN"),
        "secure": config["REMEMBER_COOKIE_SECURE"],
        "httponly": config["REMEMBER_COOKIE_HTTPONLY"],
        "samesite": config["REMEMBER_COOKIE_SAMESITE"],
    }


login_manager = LoginManager()
csrf = CSRFProtect()
