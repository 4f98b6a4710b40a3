"""Bounds on numbers and nesting read from clients and the admin API.

Every number a peer sends is checked here or against these constants where it
is parsed, so nothing past SQLite's 64-bit INTEGER (or below zero, where that
means nothing) reaches the store, and no JSON document nests deeper than
:data:`MAX_JSON_DEPTH` before a decoder with a recursion limit sees it.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import CommandError

MAX_INT: Final = 2**63 - 1  # SQLite INTEGER is a signed 64-bit number
MIN_INT: Final = -(2**63)
# Every valid chat.v1 command and admin API body is a flat object; this leaves
# room for any future nesting and stays far below msgspec's and json's
# recursion limits.
MAX_JSON_DEPTH: Final = 32

_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_BRACKET: Final = re.compile(r"[\[\]{}]")


def json_depth(document: str) -> int:
    """The deepest nesting of arrays and objects in ``document`` (strings skipped)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", document)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest


def check_json_depth(document: str | bytes) -> None:
    """Raise ``bad_json`` if ``document`` nests deeper than MAX_JSON_DEPTH."""
    text = document.decode("utf-8", "replace") if isinstance(document, bytes) else document
    # Counting in C first keeps the common case (a flat command) off the slow scan.
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    if json_depth(text) > MAX_JSON_DEPTH:
        raise CommandError("bad_json", f"JSON nests deeper than {MAX_JSON_DEPTH} levels")


def check_id(value: int, key: str) -> int:
    """``value`` if it is a non-negative id that SQLite can hold, else ``bad_request``."""
    if not 0 <= value <= MAX_INT:
        raise CommandError("bad_request", f"{key} must be an integer from 0 to {MAX_INT}")
    return value
