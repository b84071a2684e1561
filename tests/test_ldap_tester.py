"""The binding tester, as a command and as an admin page, against the real slapd."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from ldap_server import OBRIEN, dead_url
from test_ldap import ldap_settings
from test_ldap_tls import tls_listener

from conftest import PASSWORD, csrf_from
from identity import certs


@pytest.fixture
def app_overrides(directory):
    return ldap_settings(directory)


def ldap_test(app, *args, stdin=""):
    return app.test_cli_runner().invoke(args=["ldap", "test", *args], input=stdin)


def steps_of(result) -> list[dict]:
    return json.loads(result.output)["steps"]


def test_every_step_passes_for_a_good_setup(app, directory):
    r = ldap_test(
        app,
        "--username",
        "ada",
        "--password-stdin",
        "--json",
        stdin=directory.passwords["ada"] + "\n",
    )
    assert r.exit_code == 0, r.output
    steps = steps_of(r)
    names = [s["name"] for s in steps]
    assert names == [
        f"connect {directory.url}",
        "StartTLS",
        f"service bind as {directory.bind_dn}",
        "user search",
        f"user bind as {directory.dn('ada')}",
        "attributes",
        "groups",
    ]
    assert all(s["ok"] for s in steps)
    by = {s["name"]: s for s in steps}
    assert "TLSv1." in by["StartTLS"]["detail"] and "Identity local CA" in by["StartTLS"]["detail"]
    assert "(uid=ada)" in by["user search"]["detail"] and "1 entry" in by["user search"]["detail"]
    assert directory.entry_uuid("ada") in by["attributes"]["detail"]
    assert (
        "engineers" in by["groups"]["detail"]
        and f"admin group {directory.group_dn('idp-admins')}: yes" in by["groups"]["detail"]
    )
    assert directory.passwords["ada"] not in r.output and directory.bind_password not in r.output


def test_text_output(app, directory):
    r = ldap_test(
        app, "--username", OBRIEN, "--password-stdin", stdin=directory.passwords[OBRIEN] + "\n"
    )
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith("all steps passed")
    assert "OK   user search" in r.output and "(uid=O'Brien, Jr. \\28ops\\29\\2a)" in r.output


def test_wrong_password_shows_the_server_answer(app, directory):
    r = ldap_test(app, "--username", "ada", "--password-stdin", "--json", stdin="nope nope\n")
    assert r.exit_code == 1
    bind = steps_of(r)[-1]
    assert not bind["ok"] and bind["answer"].startswith("49 invalidCredentials")
    assert "wrong DN or password" in bind["hint"]


def test_locked_and_expired_accounts_show_the_policy(app, directory):
    r = ldap_test(
        app,
        "--username",
        "expired",
        "--password-stdin",
        "--json",
        stdin=directory.passwords["expired"] + "\n",
    )
    assert r.exit_code == 1 and "passwordExpired" in steps_of(r)[-1]["detail"]
    r = ldap_test(
        app,
        "--username",
        "mustchange",
        "--password-stdin",
        "--json",
        stdin=directory.passwords["mustchange"] + "\n",
    )
    assert r.exit_code == 1 and "changeAfterReset" in steps_of(r)[-1]["detail"]


def test_unknown_user_and_bad_base(app, directory):
    r = ldap_test(app, "--username", "nobody", "--json")
    assert r.exit_code == 1 and "no entry" in steps_of(r)[-1]["detail"]
    r = ldap_test(app, "--username", "ada", "--base", "ou=nowhere,dc=example,dc=org", "--json")
    last = steps_of(r)[-1]
    assert r.exit_code == 1 and last["answer"].startswith("32 noSuchObject")
    assert "base DN does not exist" in last["hint"]


def test_wrong_service_password_typed_for_an_override(app, directory):
    r = ldap_test(
        app,
        "--url",
        directory.url,
        "--bind-password-stdin",
        "--json",
        stdin="not the service password\n",
    )
    assert r.exit_code == 1
    bind = steps_of(r)[-1]
    assert bind["name"].startswith("service bind") and bind["answer"].startswith("49")
    assert "not the service password" not in r.output


def test_wrong_ca_and_dead_server(app, directory, tmp_path):
    app.config["LDAP_CA_FILE"] = directory.wrong_ca_file
    dead = dead_url()
    r = ldap_test(
        app,
        "--url",
        directory.ldaps_url,
        "--url",
        dead,
        "--json",
        "--bind-password-stdin",
        stdin=directory.bind_password + "\n",
    )
    assert r.exit_code == 1
    steps = steps_of(r)
    assert not steps[0]["ok"] and "does not chain to IDP_LDAP_CA_FILE" in steps[0]["hint"]
    assert not steps[1]["ok"] and "nothing listens" in steps[1]["hint"]


def test_a_certificate_for_another_host_has_a_hint(app, tmp_path):
    certs.ensure(tmp_path, ["ldap.example.org"])
    app.config["LDAP_CA_FILE"] = str(tmp_path / certs.CA_CERT)
    with tls_listener(tmp_path) as port:
        r = ldap_test(
            app,
            "--url",
            f"ldaps://127.0.0.1:{port}",
            "--json",
            "--bind-password-stdin",
            stdin="x\n",
        )
    assert r.exit_code == 1
    step = steps_of(r)[0]
    assert not step["ok"] and "not issued for this host name" not in step["hint"], step
    assert "subjectAltName" not in r.output  # a message, not the certificate's dict


def test_a_certificate_name_mismatch_names_the_certificate_and_the_setting(app, tmp_path):
    certs.ensure(tmp_path, ["ldap.example.org", "10.1.2.3"])
    app.config["LDAP_CA_FILE"] = str(tmp_path / certs.CA_CERT)
    with tls_listener(tmp_path) as port:
        r = ldap_test(
            app,
            "--url",
            f"ldaps://127.0.0.1:{port}",
            "--json",
            "--bind-password-stdin",
            stdin="x\n",
        )
    step = steps_of(r)[0]
    assert step["status"] == "failed"
    assert step["hint"] == (
        "the certificate names ldap.example.org, 10.1.2.3, not 127.0.0.1: set IDP_LDAP_URL to "
        f"one of those names (as in ldaps://ldap.example.org:{port}), or have the directory's "
        "certificate issued for 127.0.0.1 too"
    )


def test_a_skipped_step_is_shown_as_skipped_not_failed(app, browser, directory):
    # A changed URL without a typed bind password: the service bind is not run.
    r = ldap_test(app, "--url", directory.url, "--json")
    out = json.loads(r.output)
    bind = out["steps"][-1]
    assert r.exit_code == 1 and out["verdict"] == "skipped" and not out["ok"]
    assert bind["status"] == "skipped" and bind["skipped"] and not bind["ok"]
    text = ldap_test(app, "--url", directory.url).output
    assert f"SKIP service bind as {directory.bind_dn}" in text and "FAIL" not in text
    assert text.strip().endswith("no step failed, but some were skipped")

    browser.login("ada", directory.passwords["ada"])
    html = browser.post("/admin/ldap/test", {"url": directory.url}).get_data(as_text=True)
    assert "No step failed, but some were skipped</h2>" in html
    assert '<tr class="skipped">' in html and "<strong>Skipped</strong>" in html
    assert "FAIL" not in html and "Some steps failed" not in html


class Recorder:
    """A TCP server that accepts and records every byte it receives, answering nothing."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.received = b""
        self.url = f"ldap://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.2)
                deadline = time.monotonic() + 1.5
                while time.monotonic() < deadline and not self.stop.is_set():
                    try:
                        data = conn.recv(4096)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    self.received += data

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_a_changed_url_never_receives_the_stored_bind_password(app, directory):
    rec = Recorder()
    try:
        app.config["LDAP_START_TLS"] = False  # so that anything sent would be readable here
        r = ldap_test(app, "--url", rec.url, "--username", "ada", "--json")
        time.sleep(0.3)
    finally:
        rec.close()
    assert r.exit_code == 1
    bind = steps_of(r)[-1]
    assert bind["name"] == f"service bind as {directory.bind_dn}" and not bind["ok"]
    assert "stored bind password is withheld" in bind["detail"]
    assert directory.bind_password.encode() not in rec.received


@pytest.mark.parametrize(
    "args,message",
    [
        (["--url", "http://example.org"], "is not an ldap:// or ldaps:// URL"),
        (["--password-stdin"], "--password-stdin needs --username"),
        (["--filter", "(uid=*)"], "--filter: must contain {username}"),
        (["--filter", "(&(uid={username})(ou={dept}))"], "--filter: unknown placeholder {dept}"),
        (["--filter", "(uid={username})(cn=a}b)"], "--filter: Single '}'"),
    ],
)
def test_bad_arguments(app, directory, args, message):
    r = ldap_test(app, *args)
    assert r.exit_code == 1 and message in r.output


def test_not_configured(app, directory):
    app.config["LDAP_URL"] = []
    r = ldap_test(app)
    assert r.exit_code == 1 and "IDP_LDAP_URL is not set" in r.output


# -- the admin page -----------------------------------------------------------------------


def test_page_is_for_admins_only(app, browser, user, directory):
    r = browser.get("/admin/ldap/test")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=/admin/ldap/test")
    browser.login("alice", PASSWORD)
    assert browser.get("/admin/ldap/test").status_code == 403
    r = browser.client.post(
        "/admin/ldap/test",
        data={"username": "ada"},
        headers={"Referer": "https://localhost/admin/ldap/test"},
    )
    assert r.status_code in (400, 403)


def test_admin_runs_the_test_from_the_page(app, browser, directory):
    # ada is an administrator through the directory group idp-admins.
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302
    page = browser.get("/admin/ldap/test").get_data(as_text=True)
    assert "Current settings" in page and directory.bind_password not in page
    assert "set (never shown)" in page
    r = browser.post(
        "/admin/ldap/test", {"username": "grace", "password": directory.passwords["grace"]}
    )
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "All steps passed" in html
    assert directory.passwords["grace"] not in html and directory.bind_password not in html


@pytest.mark.parametrize(
    "data,message",
    [
        ({"url": "http://evil.example"}, "is not an ldap:// or ldaps:// URL"),
        ({"user_filter": "(uid=*)"}, "The filter must contain {username}."),
        ({"user_filter": "(&(uid={username})(ou={dept}))"}, "unknown placeholder {dept}"),
        ({"user_filter": "(uid={username}}"}, "Single &#39;}&#39; encountered"),
        ({"username": "x" * 300}, "Field cannot be longer than 256 characters."),
        ({"base": "ou=x\x00"}, "Contains characters that cannot be used"),
    ],
)
def test_page_bad_input(app, browser, directory, data, message):
    browser.login("ada", directory.passwords["ada"])
    r = browser.post("/admin/ldap/test", data)
    assert r.status_code == 400 and message in r.get_data(as_text=True)


def test_page_withholds_the_bind_password_from_a_changed_url(app, browser, directory):
    browser.login("ada", directory.passwords["ada"])
    rec = Recorder()
    try:
        app.config["LDAP_START_TLS"] = False
        token = csrf_from(browser.get("/admin/ldap/test").get_data(as_text=True))
        r = browser.client.post(
            "/admin/ldap/test",
            data={"url": rec.url, "csrf_token": token},
            headers={"Referer": "https://localhost/admin/ldap/test"},
        )
        time.sleep(0.3)
    finally:
        rec.close()
    assert "stored bind password is withheld" in r.get_data(as_text=True)
    assert directory.bind_password.encode() not in rec.received


def test_silent_server_times_out_with_a_hint(app, directory):
    from ldap_server import blackhole

    app.config["LDAP_CONNECT_TIMEOUT"] = 1
    app.config["LDAP_READ_TIMEOUT"] = 1
    with blackhole() as silent:
        r = ldap_test(
            app,
            "--url",
            silent,
            "--bind-password-stdin",
            "--json",
            stdin=directory.bind_password + "\n",
        )
    assert r.exit_code == 1
    step = steps_of(r)[-1]
    assert not step["ok"] and "no answer in time" in (step["hint"] or ""), step


def test_locked_account_in_the_tester(app, directory):
    r = ldap_test(
        app,
        "--username",
        "locked",
        "--password-stdin",
        "--json",
        stdin=directory.passwords["locked"] + "\n",
    )
    last = steps_of(r)[-1]
    assert r.exit_code == 1 and last["answer"].startswith("49")
    assert "accountLocked" in last["detail"]


def test_filter_with_bad_ldap_syntax_is_a_failed_step(app, directory):
    r = ldap_test(app, "--username", "ada", "--filter", "(uid={username}", "--json")
    assert r.exit_code == 1 and "Traceback" not in r.output
    search = steps_of(r)[-1]
    assert search["name"] == "user search" and not search["ok"]
    assert "filter" in search["detail"].lower()


def test_page_needs_the_csrf_token_even_for_admins(app, browser, directory):
    browser.login("ada", directory.passwords["ada"])
    r = browser.post("/admin/ldap/test", {"username": "grace"}, csrf=False)
    assert r.status_code == 400 and "This form has expired" in r.get_data(as_text=True)
