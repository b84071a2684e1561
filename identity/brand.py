"""The service's brand on every page: its name, its logo, and its accent colour as a stylesheet.

The accent cannot go into a style attribute (the Content-Security-Policy forbids inline
styles), so /brand.css is generated once at start from IDP_BRAND_ACCENT and linked after
idp.css with its digest in the URL: browsers keep it for a year and ask again only when the
colour changes (a strong ETag answers the odd revalidation with 304). The colour is adjusted,
darker for light mode and lighter for dark mode, until text in it and on it reads at WCAG
AA contrast (4.5:1)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, abort, current_app, request, url_for

bp = Blueprint("brand", __name__)

LIGHT_BACKGROUND = "#f4f5f7"  # idp.css --bg (the card, #fff, is lighter still)
DARK_BACKGROUND = "#1d2127"  # idp.css --card in dark mode (--bg, #14171b, is darker)
LIGHT_TEXT, DARK_TEXT = "#ffffff", "#0b1220"
AA = 4.5
YEAR = 365 * 24 * 3600


@dataclass(frozen=True)
class Brand:
    name: str
    logo: str | None  # a URL, or a path under /static/
    css: str | None  # the stylesheet's text when an accent is set
    version: str | None  # its digest, in the link's URL and the ETag


def _rgb(colour: str) -> tuple[float, float, float]:
    return tuple(int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def luminance(colour: str) -> float:
    """WCAG 2 relative luminance."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in _rgb(colour)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio, 1 to 21."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def readable(colour: str, background: str) -> str:
    """`colour`, or the first mix of it towards black or white (whichever is away from
    `background`) that reads on `background` at AA contrast."""
    towards = 0.0 if luminance(background) > 0.18 else 1.0
    rgb = _rgb(colour)
    for step in range(21):
        t = step / 20
        mixed = _hex(tuple(c + (towards - c) * t for c in rgb))  # type: ignore[arg-type]
        if contrast(mixed, background) >= AA:
            return mixed
    return _hex((towards,) * 3)  # pragma: no cover (pure black or white always reads)


def on(colour: str) -> str:
    """The text colour for a button of `colour`: white or near-black, whichever reads better."""
    return max((LIGHT_TEXT, DARK_TEXT), key=lambda text: contrast(text, colour))


def stylesheet(accent: str) -> str:
    light = readable(accent, LIGHT_BACKGROUND)
    dark = readable(accent, DARK_BACKGROUND)
    return (
        f"/* IDP_BRAND_ACCENT {accent}, adjusted for AA contrast where needed. */\n"
        f":root {{ --accent: {light}; --accent-fg: {on(light)}; }}\n"
        "@media (prefers-color-scheme: dark) {\n"
        f"  :root {{ --accent: {dark}; --accent-fg: {on(dark)}; }}\n"
        "}\n"
    )


def init_app(app: Flask) -> None:
    """Build the brand from the (checked) settings; serve /brand.css; give every template
    `brand` (name, logo URL, stylesheet URL)."""
    cfg = app.config
    css = stylesheet(cfg["BRAND_ACCENT"]) if cfg["BRAND_ACCENT"] else None
    version = hashlib.sha256(css.encode()).hexdigest()[:16] if css else None
    app.extensions["idp.brand"] = Brand(cfg["BRAND_NAME"], cfg["BRAND_LOGO_URL"], css, version)
    app.register_blueprint(bp)

    @app.context_processor
    def _brand() -> dict:
        brand: Brand = current_app.extensions["idp.brand"]
        logo = brand.logo
        if logo and logo.startswith("/static/"):
            logo = url_for("static", filename=logo[len("/static/") :])
        css_url = url_for("brand.stylesheet_file", v=brand.version) if brand.css else None
        return {"brand": {"name": brand.name, "logo": logo, "css": css_url}}


@bp.get("/brand.css")
def stylesheet_file():
    brand: Brand = current_app.extensions["idp.brand"]
    if brand.css is None:
        abort(404)
    response = Response(brand.css, mimetype="text/css")
    response.set_etag(brand.version)
    current = request.args.get("v") == brand.version
    # The versioned URL never changes meaning; any other is revalidated.
    response.cache_control.public = True
    response.cache_control.max_age = YEAR if current else 0
    if current:
        response.cache_control.immutable = True
    else:
        response.cache_control.no_cache = True
    return response.make_conditional(request)
