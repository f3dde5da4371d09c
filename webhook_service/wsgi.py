"""WSGI entry point for gunicorn: `gunicorn webhook_service.wsgi:app`.

``WEB_SURFACE`` (receiver, operator or all) picks the routes this process
serves, so one deployment runs the public receiver and the private operator
side as two gunicorn processes.
"""

from __future__ import annotations

from .logging_setup import configure_logging
from .web import create_app

app = create_app()
configure_logging(app.config["SETTINGS"].log_level, app.config["SETTINGS"].log_format)
