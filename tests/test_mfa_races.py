"""Second factors against the real threaded HTTPS server: one TOTP code or one recovery code
used by 20 browsers at once signs exactly one in, and apps read the second factor in `amr`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pyotp
import pytest
from oidc_rp import App, Person, register

from identity.auth import accounts, mfa
from identity.extensions import db
from identity.models import TotpFactor

N = 20


@pytest.fixture
def idp_settings() -> dict:
    # Room for 20 wrong codes: what is tested is the spending of the code, not the lockout.
    return {
        "LOCKOUT_ACCOUNT_FAILURES": 100,
        "LOCKOUT_IP_FAILURES": 100,
        "PASSWORD_CHECK_RATE_LIMIT": "1000/minute",
    }


def enrol(idp) -> tuple[str, list[str]]:
    secret = pyotp.random_base32()
    with idp.app.app_context():
        user = accounts.find("alice")
        step = int(time.time() // 30)
        db.session.add(TotpFactor(user_id=user.id, secret=mfa.seal(secret), last_step=step - 2))
        codes = mfa.issue_recovery_codes(user)
        db.session.commit()
    return secret, codes


def pending_browsers(idp, n: int) -> list[tuple[Person, object]]:
    """`n` browsers that passed the password and wait on the second-factor page."""
    out = []
    for _ in range(n):
        person = Person(idp)
        page = person.sign_in(person.open(f"{idp.url}/login"))
        assert page.final.endswith("/login/second-factor"), page.final
        out.append((person, page))
    return out


def race(browsers, code: str) -> list:
    with ThreadPoolExecutor(max_workers=len(browsers)) as pool:
        return list(pool.map(lambda b: b[0].submit(b[1], {"code": code}), browsers))


def test_twenty_concurrent_uses_of_one_totp_code_sign_exactly_one_in(idp):
    secret, _ = enrol(idp)
    browsers = pending_browsers(idp, N)
    code = pyotp.TOTP(secret).now()
    results = race(browsers, code)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [401] * (N - 1), statuses  # 200: the account page
    assert sum(r.final.endswith("/account") for r in results) == 1
    assert all("already used" in r.text for r in results if r.status_code == 401)


def test_twenty_concurrent_uses_of_one_recovery_code_sign_exactly_one_in(idp):
    _, codes = enrol(idp)
    browsers = pending_browsers(idp, N)
    results = race(browsers, codes[0])
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [401] * (N - 1), statuses
    with idp.app.app_context():
        assert mfa.recovery_codes_left(accounts.find("alice")) == 9


@pytest.mark.parametrize("idp_settings", [{}])
def test_under_the_default_lockout_one_code_never_signs_in_twice(idp):
    """With the real lockout (5 failures) the losers lock the name; at most one wins, and
    nobody sees a server error."""
    secret, _ = enrol(idp)
    browsers = pending_browsers(idp, 5)
    results = race(browsers, pyotp.TOTP(secret).now())
    assert sum(r.final.endswith("/account") for r in results) <= 1
    assert all(r.status_code in (200, 401, 429) for r in results)


def test_the_id_token_says_a_second_factor_was_used(idp):
    secret, _ = enrol(idp)
    app = App(idp, register(idp))
    person = Person(idp)
    page = person.sign_in(person.open(app.authorization_url()))
    assert page.final.endswith("/login/second-factor"), page.final
    page = person.submit(page, {"code": pyotp.TOTP(secret).now()})
    if "Allow" in page.text and page.status_code == 200:
        page = person.submit(page, {"decision": "allow"})
    claims = app.verify(app.redeem(page)["id_token"]).claims
    assert claims["amr"] == ["pwd", "otp", "mfa"]
