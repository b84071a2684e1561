"""A User-Agent header as a short label people recognise ("Firefox on Windows")."""

from __future__ import annotations

import re

# First match wins: Edge and Opera also say Chrome, Chrome also says Safari.
_BROWSERS = (
    (re.compile(r"Edg(?:e|A|iOS)?/"), "Edge"),
    (re.compile(r"OPR/|Opera"), "Opera"),
    (re.compile(r"SamsungBrowser/"), "Samsung Internet"),
    (re.compile(r"Firefox/|FxiOS/"), "Firefox"),
    (re.compile(r"Chrome/|CriOS/|Chromium/"), "Chrome"),
    (re.compile(r"Safari/"), "Safari"),
    (re.compile(r"^curl/"), "curl"),
    (re.compile(r"^python-requests/"), "Python requests"),
)
_SYSTEMS = (
    (re.compile(r"iPhone|iPad|iPod"), "iOS"),
    (re.compile(r"Android"), "Android"),
    (re.compile(r"CrOS"), "ChromeOS"),
    (re.compile(r"Windows"), "Windows"),
    (re.compile(r"Mac OS X|Macintosh"), "macOS"),
    (re.compile(r"Linux|X11"), "Linux"),
)


def label(user_agent: str | None) -> str:
    """ "Browser on system", either part alone, or "Unknown browser"."""
    text = (user_agent or "")[:512]
    browser = next((name for rx, name in _BROWSERS if rx.search(text)), None)
    system = next((name for rx, name in _SYSTEMS if rx.search(text)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown browser"
