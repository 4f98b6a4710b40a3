"""What text and names may contain, and when two names look the same.

Message text, names, room names and operator reasons share one rule: a
character that changes how *other* text is shown (line and paragraph breaks,
C0/C1 controls, bidi overrides and isolates, zero-width and other format
characters, surrogates) is refused, so one message is one line and cannot
forge another user's line. Names are stricter (no private-use, unassigned or
invisible filler characters, no space other than U+0020).

Two names are the same name when their confusable skeletons are equal
(Unicode TR39 section 4, case-folded): ``Alice`` spelt with a Cyrillic A
(U+0410) is ``Alice``, ``User 16`` with a Cyrillic e (U+0435) is ``User 16``. The table is the
Unicode confusables data shipped by the ``confusable-homoglyphs`` package.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Final

from confusable_homoglyphs.confusables import confusables_data

from .errors import CommandError

# Categories refused everywhere: controls, format characters (bidi, zero-width),
# line/paragraph separators, surrogates.
_REFUSED: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Names also refuse private-use and unassigned code points (they render as
# anything, or as nothing, depending on the font).
_REFUSED_IN_NAMES: Final = _REFUSED | {"Co", "Cn"}
_ALLOWED_CONTROLS: Final = frozenset("\t")
ZWJ: Final = "\u200d"
# A zero-width joiner is part of emoji sequences (👨‍👩‍👧): allowed right after an
# emoji, a modifier or a variation selector, refused anywhere else.
_JOINABLE: Final = frozenset({"So", "Sk", "Mn", "Me"})
# Letters that render as blank space (Hangul fillers, the braille blank).
_INVISIBLE_LETTERS: Final = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_SPACES: Final = re.compile(r"\s+")
_STRAY_MARK: Final = "\u200e"  # the table wraps right-to-left characters in LRMs


def refused_char(text: str, *, name: bool = False) -> str | None:
    """The first character of ``text`` the rule above refuses, or None."""
    refused = _REFUSED_IN_NAMES if name else _REFUSED
    previous = ""
    for ch in text:
        category = unicodedata.category(ch)
        if category in refused and ch not in _ALLOWED_CONTROLS:
            joins_emoji = ch == ZWJ and not name and unicodedata.category(previous) in _JOINABLE
            if not joins_emoji:
                return ch
        if name and (ch in _INVISIBLE_LETTERS or (category == "Zs" and ch != " ")):
            return ch
        previous = ch or previous
    return None


def describe(ch: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``, for error messages."""
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')})"


def check_line(text: str, what: str, code: str) -> str:
    """Return ``text`` if it is one line of visible text, else raise ``code``."""
    ch = refused_char(text)
    if ch is not None:
        if ch in "\n\r\x85\u2028\u2029":
            raise CommandError(code, f"{what} is one line: send each line as its own message")
        raise CommandError(code, f"{what} cannot contain {describe(ch)}")
    return text


@functools.cache
def _prototypes() -> dict[str, str]:
    """Each confusable character mapped to its prototype (TR39 confusables.txt).

    The package's table lists, for a source character, its one prototype, and
    for a prototype, every source. A pair that lists only each other is one
    class whose direction the table does not keep; either member can name it.
    """
    table: dict[str, str] = {}
    for char, entries in confusables_data.items():
        if len(char) != 1 or len(entries) != 1:
            continue
        target = entries[0]["c"].replace(_STRAY_MARK, "")
        back = confusables_data.get(target, [])
        if len(back) == 1 and back[0]["c"].replace(_STRAY_MARK, "") == char:
            target = min(char, target)
        if target != char:
            table[char] = target
    return table


def _map(text: str) -> str:
    table = _prototypes()
    return "".join(table.get(ch, ch) for ch in unicodedata.normalize("NFD", text))


def name_skeleton(name: str) -> str:
    """The identity of a name: its case-folded TR39 skeleton, spaces collapsed."""
    folded = _map(_map(name.casefold()).casefold())
    return _SPACES.sub(" ", unicodedata.normalize("NFD", folded).strip())


@functools.cache
def _digit_of() -> dict[str, str]:
    """Skeleton character -> decimal digit, for reading ``User N`` back."""
    return {name_skeleton(str(digit)): str(digit) for digit in range(10)}


_RESERVED_PREFIX: Final = name_skeleton("user")


def reserved_user_id(name: str) -> int | None:
    """N if ``name`` looks like the reserved default name ``User N``, else None.

    Spaces and punctuation are ignored, so ``User 16.``, ``user16`` and
    ``User 16`` with a Cyrillic e (U+0435) all read as user 16.
    """
    key = "".join(ch for ch in name_skeleton(name) if ch.isalnum())
    rest = key.removeprefix(_RESERVED_PREFIX)
    if rest == key or not rest or len(rest) > 19:
        return None
    digits = _digit_of()
    if not all(ch in digits for ch in rest):
        return None
    return int("".join(digits[ch] for ch in rest))
