"""Entry point for `celery -A webhook_service.celery_worker worker|beat` (used by the Procfile)."""

from __future__ import annotations

from .logging_setup import configure_logging
from .tasks import celery_init_app
from .web import create_app

flask_app = create_app()
configure_logging(flask_app.config["SETTINGS"].log_level)
celery = celery_init_app(flask_app)
