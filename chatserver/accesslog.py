"""An access log without secrets: resume tokens and other credentials in query
strings (and in a ``Referer`` that carries them) are masked before the line is
written, since anyone who reads a ``?session=TOKEN`` line could take over that
session for a day."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

MASK: Final = "***"
# Query parameters that carry a credential: the chat's resume token, and the
# usual names others use, so a proxy or page adding one does not leak it either.
SECRET_PARAMS: Final = ("session", "token", "access_token", "csrf", "password", "secret", "key")
_SECRET_QUERY: Final = re.compile(
    r"([?&;](?:" + "|".join(SECRET_PARAMS) + r')=)[^&;#\s"]*', re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\g<1>" + MASK, text) if "=" in text else text


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
