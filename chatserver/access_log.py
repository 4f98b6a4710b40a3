"""The HTTP access log, with credentials taken out of URLs.

aiohttp's default access line holds the request line, query string and all:
``?token=`` (a site's JWT), ``?session=`` (a resume token) and ``?password=``
would land in every log file. Their values are replaced by ``***``.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

SECRET_PARAMETERS: Final = frozenset({"token", "session", "password"})


def redacted_path(request: web.BaseRequest) -> str:
    url = request.rel_url
    if not SECRET_PARAMETERS.intersection(url.query):
        return str(url)
    query = [(k, "***" if k in SECRET_PARAMETERS else v) for k, v in url.query.items()]
    return str(url.with_query(query))


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request: address, request line (redacted), status, size, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s HTTP/%s.%s" %s %s %.3fs',
            request.remote,
            request.method,
            redacted_path(request),
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            time,
        )
