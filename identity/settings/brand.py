"""The branding settings checks: name, logo and accent colour land in pages, CSS and e-mails.

Each is checked strictly at start, so that no setting can carry HTML, CSS or a header into a
response: the name is plain text of one line, the logo an https URL or a file under /static/,
the accent a hex colour."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config import ConfigError

NAME_MAX = 60
URL_MAX = 2000
HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# A file under /static/: plain path characters only, no "..", no "//".
STATIC_PATH = re.compile(r"/static/[A-Za-z0-9_~-][A-Za-z0-9._~/-]*")
# A host as it may appear in a Content-Security-Policy source (IDNs in their xn-- form).
HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")


def brand_settings(cfg: Any, static_folder: str | None) -> None:
    """Normalise IDP_BRAND_NAME, IDP_BRAND_LOGO_URL and IDP_BRAND_ACCENT, or raise ConfigError."""
    cfg["BRAND_NAME"] = brand_name(cfg["BRAND_NAME"])
    cfg["BRAND_LOGO_URL"] = logo_url(cfg["BRAND_LOGO_URL"], static_folder)
    cfg["BRAND_ACCENT"] = accent(cfg["BRAND_ACCENT"])


def brand_name(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # from_prefixed_env reads IDP_BRAND_NAME=42 as a number
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= NAME_MAX:
        raise ConfigError(f"IDP_BRAND_NAME must be 1 to {NAME_MAX} characters, not {value!r}")
    # Control, format (bidi overrides, zero-width) and line/paragraph separators: the name
    # goes into e-mail subjects and must read as what it is.
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise ConfigError(
            "IDP_BRAND_NAME must be one line of text without control or invisible characters"
        )
    return value.strip()


def logo_url(value: Any, static_folder: str | None) -> str | None:
    """None, an https:// URL, or a path under /static/ naming a file that exists there."""
    if value in (None, ""):
        return None
    problem = (
        "IDP_BRAND_LOGO_URL must be an https:// URL or a path under /static/ "
        f"(a file in identity/static), not {value!r}"
    )
    if not isinstance(value, str) or len(value) > URL_MAX:
        raise ConfigError(problem)
    if value.startswith("/"):
        if not STATIC_PATH.fullmatch(value) or ".." in value or "//" in value:
            raise ConfigError(problem)
        if static_folder and not (Path(static_folder) / value[len("/static/") :]).is_file():
            raise ConfigError(f"IDP_BRAND_LOGO_URL: there is no file {value} in {static_folder}")
        return value
    image_origin(value, "IDP_BRAND_LOGO_URL", problem)
    return value


def image_origin(url: str, setting: str, problem: str | None = None) -> str:
    """The origin (https://host[:port]) of an https image URL, safe to name in a
    Content-Security-Policy header; ConfigError (with `problem`) when it is anything else."""
    problem = problem or f"{setting} must be an https:// URL, not {url!r}"
    if any(c.isspace() or not c.isprintable() or c in "\"'<>\\`" for c in url):
        raise ConfigError(problem)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(problem) from None
    host = parts.hostname or ""
    if parts.scheme != "https" or not HOST.fullmatch(host) or "@" in parts.netloc:
        raise ConfigError(problem)
    return f"https://{host}" + (f":{port}" if port else "")


def accent(value: Any) -> str | None:
    """None or a colour as #rrggbb (lower case; #rgb is widened)."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not HEX_COLOUR.fullmatch(value):
        raise ConfigError(f"IDP_BRAND_ACCENT must be a hex colour such as #2f6fed, not {value!r}")
    digits = value[1:].lower()
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return "#" + digits
