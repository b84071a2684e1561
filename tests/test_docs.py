"""The README and docs/ stay a guide and stay true: short, links and images that exist,
commands, options, routes and output that the code has."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import click
import pytest

from conftest import make_app
from identity.bootstrap import admin_box

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def text_of(page: Path) -> str:
    return page.read_text()


def anchors(page: Path) -> set[str]:
    """GitHub's ids for the page's headings: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", text_of(page)), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_readme_is_a_guide_under_2500_words():
    words = len(text_of(README).split())
    assert words < 2500, f"README.md has {words} words: move reference material to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_points_to_a_file_or_heading_that_exists(page):
    """Relative links (and their #anchors) resolve in this repository; nothing points to
    material a user does not have."""
    text = text_of(page)
    assert "../shared" not in text and "shared/ARCHITECTURE" not in text
    broken = []
    for target in LINK.findall(text):
        if re.match(r"https?://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_readme_shows_the_screenshots_that_make_screenshots_takes():
    """The README's images are PNGs in docs/screenshots, small (1100 px wide, under
    300 KB), and exactly the pages the browser tests publish, so they are remade by
    `make screenshots` rather than drawn by hand."""
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text_of(README))
    assert "docs/screenshots/login.png" in images
    published = set(
        re.findall(r'publish\(page, "([\w-]+)"\)', text_of(ROOT / "tests/test_browser.py"))
    )
    assert {f"docs/screenshots/{name}.png" for name in published} == set(images)
    for image in images:
        path = ROOT / image
        width, height = png_size(path)
        assert width == 1100 and height <= 1000, (image, width, height)
        assert path.stat().st_size < 300_000, (image, path.stat().st_size)


def test_readme_shows_the_frame_that_setup_prints():
    """The framed password in the README is what `make run` prints, byte for byte."""
    block = re.search(r"```text\n(.*?)```", text_of(README), re.S)
    assert block, "README.md shows no `make run` output"
    password = re.search(r"password: (\S+)", block.group(1)).group(1)
    shown = admin_box(password, "https://localhost:5000", flask=".venv/bin/flask --app idp")
    assert block.group(1).strip("\n") == shown.strip("\n")


@pytest.fixture
def every_provider_app(database_url, tmp_path):
    providers = {
        f"{name}_OAUTH_{part}": "x"
        for name in ("GOOGLE", "FACEBOOK", "TWITTER", "GITHUB")
        for part in ("CLIENT_ID", "CLIENT_SECRET")
    }
    return make_app(database_url, tmp_path, **providers)


def test_readme_gives_each_providers_redirect_uri_and_settings(every_provider_app):
    """Each provider's redirect URI in the README is the route its callback is served at,
    next to the two settings that turn it on."""
    readme = text_of(README)
    callbacks = [
        r.rule
        for r in every_provider_app.url_map.iter_rules()
        if r.endpoint.endswith(".authorized")
    ]
    assert sorted(callbacks) == [
        "/login/facebook/authorized",
        "/login/github/authorized",
        "/login/google/authorized",
        "/login/twitter/authorized",
    ]
    for rule in callbacks:
        name = rule.split("/")[2].upper()
        assert f"`<IDP_ISSUER>{rule}`" in readme, rule
        for setting in (f"IDP_{name}_OAUTH_CLIENT_ID", f"IDP_{name}_OAUTH_CLIENT_SECRET"):
            assert f"`{setting}`" in readme, setting
            assert setting.removeprefix("IDP_") in every_provider_app.config, setting


def commands_in(page: Path) -> list[str]:
    """Every `flask --app idp …` command line in the page (continued lines joined), and in
    docs/cli.md each command of the table (its first column's code spans), without the
    prefix."""
    text = text_of(page).replace("\\\n", " ")
    found = [m.strip() for m in re.findall(r"flask --app idp ([^`\n]+)", text)]
    if page.name == "cli.md":
        for row in re.findall(r"^\| `([^|]*(?:\\\|[^|]*)*)` \|", text, re.M):
            found += [c.strip("` ") for c in row.split("`, `")]
    return [line for line in found if not line.startswith("…")]


def resolve(app, line: str) -> tuple[click.Command, list[str]]:
    """The command a line names and the --options it uses."""
    tokens = re.sub(r"[\\|()\[\]]", " ", line).split()
    command: click.Command = app.cli
    while isinstance(command, click.Group) and tokens and not tokens[0].startswith("-"):
        name = tokens.pop(0)
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"`flask --app idp {line}`: no command {name!r}"
        command = sub
    return command, re.findall(r"(?<![\w-])--[a-z][\w-]*", " ".join(tokens))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_and_option_the_docs_give_exists(app, page):
    checked = 0
    for line in commands_in(page):
        command, options = resolve(app, line)
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        unknown = [o for o in options if o not in known]
        assert not unknown, f"{page.name}: `flask --app idp {line}`: no option {unknown}"
        checked += 1
    if page.name in ("cli.md", "README.md"):
        assert checked >= 5, f"{page.name}: only {checked} commands found"


def test_every_endpoint_in_docs_oidc_is_served(app):
    text = text_of(ROOT / "docs" / "oidc.md")
    paths = set(re.findall(r"`(/[\w./-]*)`", text))
    served = {r.rule for r in app.url_map.iter_rules()}
    assert paths and paths <= served, f"docs/oidc.md names {sorted(paths - served)}"
    discovery = app.test_client().get("/.well-known/openid-configuration").get_json()
    for key, url in discovery.items():
        if key.endswith("_endpoint") or key == "jwks_uri":
            assert f"`{key}`" in text and f"`{url.removeprefix(discovery['issuer'])}" in text, key
