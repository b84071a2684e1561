"""Concurrent first sign-ins of one directory person: one account, nobody sees an error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from ldap_server import PASSWORDS
from oidc_rp import Person
from sqlalchemy import func, select
from test_ldap import ldap_settings

from identity.extensions import db
from identity.models import LinkedIdentity, User

N = 12


@pytest.fixture
def idp_settings(directory) -> dict:
    return ldap_settings(directory)


def test_concurrent_first_sign_ins_of_one_person_make_one_account(idp):
    # On PostgreSQL the losers' INSERT waited for the winner's commit, then collided on the
    # e-mail address before the code that handles the race: a 500 for some of them.
    people = [Person(idp) for _ in range(N)]
    pages = [p.open(f"{idp.url}/login") for p in people]

    def sign_in(index: int):
        form = {"username": "grace", "password": PASSWORDS["grace"]}
        return people[index].submit(pages[index], form, action="/login")

    with ThreadPoolExecutor(max_workers=N) as pool:
        results = list(pool.map(sign_in, range(N)))
    assert [r.status_code for r in results] == [200] * N, [r.text[:200] for r in results]
    assert all(r.final.endswith("/account") for r in results), [r.final for r in results]
    with idp.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 2  # alice, grace
        links = db.session.scalars(select(LinkedIdentity).where(LinkedIdentity.connector == "ldap"))
        assert len(links.all()) == 1
