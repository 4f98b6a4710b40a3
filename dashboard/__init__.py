"""The admin dashboard and admin API, mounted at ``/admin/`` by ``create_app``."""

from __future__ import annotations

from aiohttp import web


def setup_dashboard(app: web.Application) -> None:
    """Mount the admin sub-app on ``app`` and install moderation on its hub."""
