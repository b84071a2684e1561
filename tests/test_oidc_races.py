"""Concurrent redemptions of one code and concurrent uses of one refresh token: exactly one
wins, and nobody sees a server error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from oidc_rp import CALLBACK, App, Person, register, sign_in_and_allow

N = 50


def race(app: App, form: dict) -> list:
    with ThreadPoolExecutor(max_workers=N) as pool:
        return list(pool.map(lambda _: app.post("/token", form), range(N)))


def test_fifty_concurrent_redemptions_of_one_code(idp):
    app = App(idp, register(idp))
    response = sign_in_and_allow(Person(idp), app)
    form = {
        "grant_type": "authorization_code",
        "code": app.callback_params(response)["code"],
        "redirect_uri": CALLBACK,
        "code_verifier": app.verifier,
    }
    results = race(app, form)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [400] * (N - 1), statuses
    assert {r.json()["error"] for r in results if r.status_code == 400} == {"invalid_grant"}


def test_fifty_concurrent_uses_of_one_refresh_token(idp):
    app = App(idp, register(idp))
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    results = race(app, {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [400] * (N - 1), statuses
    # The losers presented a spent token: reuse, so the whole grant ended, winner included.
    (winner,) = [r.json() for r in results if r.status_code == 200]
    again = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": winner["refresh_token"]}
    )
    assert again.status_code == 400


# The race, not the registration rate limit (10 an hour per address by default): on a busy
# machine more than 10 of the 50 pass the form's "is the name free" check before the winner
# commits, and the 11th would be told to wait (429) instead.
@pytest.mark.parametrize("idp_settings", [{"REGISTRATION_RATE_LIMIT": "100/hour"}])
def test_fifty_concurrent_registrations_of_one_username(idp):
    """Fifty browsers submit the registration form for the same name at once: one account,
    the others told the name is taken, nobody sees a server error."""
    from sqlalchemy import func, select

    from identity.extensions import db
    from identity.models import User

    people = [Person(idp) for _ in range(N)]
    pages = [p.open(f"{idp.url}/register") for p in people]

    def register_as(index: int):
        form = {
            "username": "grace",
            "email": f"grace{index}@example.org",
            "password": "a long enough passphrase",
            "confirm": "a long enough passphrase",
        }
        return people[index].submit(pages[index], form, action="/register")

    with ThreadPoolExecutor(max_workers=N) as pool:
        results = list(pool.map(register_as, range(N)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [400] * (N - 1), statuses  # 200: the account page, signed in
    assert all("That username is taken" in r.text for r in results if r.status_code == 400)
    with idp.app.app_context():
        count = db.session.scalar(select(func.count()).where(User.username == "grace"))
        assert count == 1
