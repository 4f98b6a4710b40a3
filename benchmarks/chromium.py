"""Debian's Chromium as the test suite and the dashboard benchmark launch it.

Playwright drives the system browser (``playwright install`` cannot download
here); these flags keep a headless run from reaching the network on its own.
"""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
