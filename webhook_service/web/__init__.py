"""Flask application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException

from ..config import Settings
from ..db import configure_pool
from . import actions, api, auth, callbacks, dashboard, headers, health, login, openapi, reports
from .context import close_db, json_error
from .forwarded import trust_forwarded_headers

log = logging.getLogger(__name__)


# The routes each surface serves: the public receiver, the private operator side, or both.
SURFACE_BLUEPRINTS = {
    "receiver": (health.bp, callbacks.bp),
    "operator": (health.bp, health.metrics_bp, api.bp, actions.bp, openapi.bp, reports.bp, dashboard.bp,
                 login.bp),
}
SURFACE_BLUEPRINTS["all"] = (health.bp, health.metrics_bp, callbacks.bp, api.bp, actions.bp, openapi.bp,
                             reports.bp, dashboard.bp, login.bp)


def create_app(settings: Settings | None = None, surface: str | None = None, **config: Any) -> Flask:
    """Build the web app: receiver, JSON API, dashboard, health and metrics.

    ``settings`` defaults to the environment; ``surface`` (default
    ``settings.web_surface``) picks the routes: ``receiver``, ``operator`` or
    ``all``; ``config`` goes into ``app.config`` (tests pass ``TESTING=True``).
    """
    settings = settings or Settings.from_env()
    surface = surface or settings.web_surface
    if surface not in SURFACE_BLUEPRINTS:
        raise ValueError(f"surface must be one of {', '.join(SURFACE_BLUEPRINTS)}, got {surface!r}")
    configure_pool(settings.db_pool_size, settings.db_max_overflow)
    app = Flask(__name__, static_folder=None)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_callback_bytes,
        JSON_SORT_KEYS=False,
    )
    app.config.update(config)
    app.json.sort_keys = False

    _register_errors(app)
    auth.init_app(app, settings)
    for blueprint in SURFACE_BLUEPRINTS[surface]:
        app.register_blueprint(blueprint)
    headers.install(app)

    app.teardown_appcontext(close_db)
    if callbacks.bp in SURFACE_BLUEPRINTS[surface]:
        app.wsgi_app = callbacks.CallbackRoute(app.wsgi_app, settings)  # the hot path, before Flask's dispatch
    trust_forwarded_headers(app, settings.forwarded_allow_ips)
    return app


def _register_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        response = json_error(exc.code or 500, exc.description or exc.name)
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response[0].headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return json_error(500, "internal server error")
