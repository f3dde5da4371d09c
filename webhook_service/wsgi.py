"""WSGI entry point for gunicorn: `gunicorn webhook_service.wsgi:app`."""

from __future__ import annotations

from .logging_setup import configure_logging
from .web import create_app

app = create_app()
configure_logging(app.config["SETTINGS"].log_level)
