"""What every blueprint reads from the request's context: the settings, a database session, JSON errors.

A module of its own so that blueprints import it, not the application factory
that imports them: the web package has no import cycle.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, jsonify
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_factory


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def db() -> Session:
    """The request's database session, closed when the request ends."""
    if "db" not in g:
        g.db = session_factory(settings().database_url)()
    return g.db


def close_db(_exc: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every error answer: ``{"error": {"status", "message", ...}}``."""
    return {"error": {"status": status, "message": message, **extra}}


def json_error(status: int, message: str, **extra: Any):
    return jsonify(error_body(status, message, **extra)), status
