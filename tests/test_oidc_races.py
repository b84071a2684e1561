"""Concurrent redemptions of one code and concurrent uses of one refresh token: at most one
is answered with tokens, none stays live (the others are replays, which end the grant), and
nobody sees a server error."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from oidc_rp import CALLBACK, App, Person, register, sign_in_and_allow

N = 50


def race(app: App, form: dict) -> list:
    with ThreadPoolExecutor(max_workers=N) as pool:
        return list(pool.map(lambda _: app.post("/token", form), range(N)))


def at_most_one_winner(results: list) -> list[dict]:
    """Of concurrent uses of one code or refresh token, at most one is answered with tokens
    (none when a replay was noticed before the winner saved them); every other answer is
    invalid_grant, none a server error. The winners' token responses."""
    statuses = sorted(r.status_code for r in results)
    assert statuses in ([400] * N, [200] + [400] * (N - 1)), statuses
    assert {r.json()["error"] for r in results if r.status_code == 400} == {"invalid_grant"}
    return [r.json() for r in results if r.status_code == 200]


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
    winners = at_most_one_winner(results)
    # The others presented a spent code: a replay, so the grant ended, the winner's tokens
    # included, whether the winner had saved them before or not (then it was refused too).
    for token in winners:
        assert not live(app, token)


def test_fifty_concurrent_uses_of_one_refresh_token(idp):
    app = App(idp, register(idp))
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    results = race(app, {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
    winners = at_most_one_winner(results)
    # The losers presented a spent token: reuse, so the whole grant ended, winner included.
    for winner in winners:
        again = app.post(
            "/token", {"grant_type": "refresh_token", "refresh_token": winner["refresh_token"]}
        )
        assert again.status_code == 400
        assert not live(app, winner)
    assert not live(app, token)


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


# A replay noticed while the winner is still being answered. The winner spent the code or the
# refresh token and stands between the spend and the saving of its new tokens (held there
# below); the replay revokes the grant and commits; then the winner goes on. Its new tokens
# belong to a grant that is revoked: it must not hand out live ones.


@contextmanager
def held_after_spending(target, name: str):
    """Hold the first call of `target.name` (a step between the spend and the save) until
    released; yields (entered, release)."""
    original = getattr(target, name)
    entered, release = threading.Event(), threading.Event()
    calls = []

    def held(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            assert release.wait(30)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(target, name, held)
        yield entered, release


def live(app: App, token: dict) -> bool:
    response = app.post(
        "/introspect", {"token": token["access_token"], "token_type_hint": "access_token"}
    )
    return response.json()["active"]


def test_a_refresh_token_replayed_while_its_winner_is_answered_ends_the_new_tokens(idp):
    from identity.oidc import recheck

    app = App(idp, register(idp))
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    with held_after_spending(recheck, "check") as (entered, release), ThreadPoolExecutor(1) as pool:
        winner = pool.submit(app.post, "/token", form)
        assert entered.wait(30)
        replay = app.post("/token", form)
        release.set()
        winner = winner.result()
    assert replay.status_code == 400
    assert winner.status_code == 400, winner.text
    assert winner.json()["error"] == "invalid_grant"
    assert not live(app, token)


def test_a_code_replayed_while_its_winner_is_answered_ends_the_new_tokens(idp):
    from identity.oidc.grants import AuthorizationCodeGrant

    app = App(idp, register(idp))
    response = sign_in_and_allow(Person(idp), app)
    form = {
        "grant_type": "authorization_code",
        "code": app.callback_params(response)["code"],
        "redirect_uri": CALLBACK,
        "code_verifier": app.verifier,
    }
    held = held_after_spending(AuthorizationCodeGrant, "authenticate_user")
    with held as (entered, release), ThreadPoolExecutor(1) as pool:
        winner = pool.submit(app.post, "/token", form)
        assert entered.wait(30)
        replay = app.post("/token", form)
        release.set()
        winner = winner.result()
    assert replay.status_code == 400
    assert winner.status_code == 400, winner.text
    assert winner.json()["error"] == "invalid_grant"


def test_a_refresh_token_replayed_while_its_winner_commits_ends_the_new_tokens(idp):
    """The other order: the winner has saved its new tokens, not yet committed, when the
    replay comes. The replay waits for the winner's lock, then revokes what it committed.
    (On PostgreSQL the save is one statement, committed with it: the replay comes after.)"""
    from identity.oidc import tokens

    app = App(idp, register(idp))
    token = app.redeem(sign_in_and_allow(Person(idp), app))
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    with held_after_spending(tokens, "sweep") as (entered, release), ThreadPoolExecutor(2) as pool:
        winner = pool.submit(app.post, "/token", form)
        assert entered.wait(30)
        replay = pool.submit(app.post, "/token", form)
        time.sleep(0.5)  # the replay reaches the winner's lock (released early, it comes after)
        release.set()
        winner, replay = winner.result(), replay.result()
    assert replay.status_code == 400
    assert winner.status_code == 200, winner.text
    assert not live(app, winner.json())
    again = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": winner.json()["refresh_token"]}
    )
    assert again.status_code == 400
