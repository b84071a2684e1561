"""The database models; importing this package registers every table with the metadata."""

from identity.models.audit import Event
from identity.models.keys import SigningKey
from identity.models.oauth import AuthorizationCode, Client, Consent, Token
from identity.models.sessions import BrowserSession, RememberToken
from identity.models.social import ProviderToken
from identity.models.users import LinkedIdentity, PasswordReset, User

__all__ = [
    "AuthorizationCode",
    "BrowserSession",
    "Consent",
    "Token",
    "Client",
    "Event",
    "LinkedIdentity",
    "PasswordReset",
    "ProviderToken",
    "RememberToken",
    "SigningKey",
    "User",
]
