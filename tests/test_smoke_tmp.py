def test_login_flow(browser, user):
    r = browser.get("/login")
    assert r.status_code == 200
    r = browser.login()
    assert r.status_code == 302, r.get_data(as_text=True)
    assert r.headers["Location"] == "/account"
    r = browser.get("/account")
    assert "alice" in r.get_data(as_text=True)
    r = browser.logout()
    assert r.status_code == 302
    assert browser.get("/account").status_code == 302
