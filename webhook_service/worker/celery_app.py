"""Entry point for `celery -A webhook_service.worker.celery_app worker|beat` (used by the Procfile)."""

from __future__ import annotations

from ..logging_setup import configure_logging
from ..web import create_app
from . import tasks  # noqa: F401 - registers the tasks with the app below
from .app import celery_init_app

flask_app = create_app()
configure_logging(flask_app.config["SETTINGS"].log_level, flask_app.config["SETTINGS"].log_format)
celery = celery_init_app(flask_app)
