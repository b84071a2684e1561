"""The database models; importing this package registers every table with the metadata."""

from identity.models.audit import Event
from identity.models.factors import Passkey, RecoveryCode, TotpFactor, WebauthnChallenge
from identity.models.forward_auth import ForwardAuthRule
from identity.models.keys import SigningKey
from identity.models.oauth import AuthorizationCode, Client, Consent, LogoutDelivery, Token
from identity.models.sessions import BrowserSession, RememberToken
from identity.models.upstreams import UpstreamProvider
from identity.models.users import LinkedIdentity, PasswordReset, User
from identity.models.verification import EmailVerification

__all__ = [
    "AuthorizationCode",
    "BrowserSession",
    "Consent",
    "EmailVerification",
    "ForwardAuthRule",
    "LogoutDelivery",
    "Token",
    "UpstreamProvider",
    "TotpFactor",
    "Client",
    "Event",
    "LinkedIdentity",
    "Passkey",
    "PasswordReset",
    "RecoveryCode",
    "RememberToken",
    "SigningKey",
    "User",
    "WebauthnChallenge",
]
