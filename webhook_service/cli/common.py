"""What every `webhook-service` command shares: settings loading and the one error type.

A bad setting or bad input ends a command with a one-line message and exit
status 2 (``CLIError``), never a traceback.
"""

from __future__ import annotations

import click

from ..config import ConfigError, Settings
from ..db import configure_pool
from ..logging_setup import configure_logging


class CLIError(click.ClickException):
    exit_code = 2


def load_settings() -> Settings:
    """Settings from the environment, with the data folders, logging and the connection pool set up."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise CLIError(f"invalid setting: {exc}") from None
    settings.ensure_dirs()
    configure_logging(settings.log_level, settings.log_format)
    configure_pool(settings.db_pool_size, settings.db_max_overflow)
    return settings
