"""An access log without secrets: resume tokens and other credentials in query
strings (and in a ``Referer`` that carries them) are masked before the line is
written, since anyone who reads a ``?session=TOKEN`` line could take over that
session for a day."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote_plus

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

MASK: Final = "***"
# Query parameters that carry a credential: the chat's resume token, and the
# usual names others use, so a proxy or page adding one does not leak it either.
SECRET_PARAMS: Final = frozenset(
    {"session", "token", "access_token", "csrf", "password", "secret", "key"}
)
# Parameters (name=value), their names matched once decoded, as aiohttp reads
# them: ``?%74oken=...`` is a ``token``. Two readings: aiohttp's (only & ends a
# value, so ``token=a;b`` is all secret) and the older one where ; separates too
# (``x=1;token=...``), so that a proxy reading either way finds nothing.
_QUERY_READINGS: Final = (
    re.compile(r'([?&])([^=&#\s"?]*)=([^&#\s"]*)'),
    re.compile(r'([?&;])([^=&;#\s"?]*)=([^&;#\s"]*)'),
)


def _mask(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    secret = unquote_plus(name).strip().lower() in SECRET_PARAMS
    return f"{sep}{name}={MASK if secret else value}"


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced by ``***``."""
    if "=" not in text:
        return text
    for reading in _QUERY_READINGS:
        text = reading.sub(_mask, text)
    return text


class RedactingAccessLogger(AccessLogger):
    """aiohttp's access logger (same format option) with secrets masked."""

    def _format_line(
        self, request: BaseRequest, response: StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        return [
            (key, redact(value) if isinstance(value, str) else value)
            for key, value in super()._format_line(request, response, time)
        ]


ACCESS_LOG_CLASS: Final[type[AbstractAccessLogger]] = RedactingAccessLogger
