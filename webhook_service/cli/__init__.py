"""The `webhook-service` command: the root group and the registry of command groups.

Every sub-command reads its settings from the environment (see config.py); a
bad setting or bad input ends with a one-line message and exit status 2,
never a traceback (``common.CLIError``).

Each command group is one module of this package exposing ``COMMANDS``; a new
group is one module plus its entry in ``COMMAND_MODULES``. The modules import
the rest of the service inside their commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import atexit
import gc

# A command is a short process that creates a few hundred thousand long-lived objects as it imports
# SQLAlchemy, Celery and PyAV. Python's default collector passes over the young ones every 700
# allocations, and over all of them each time they grow by a quarter: much of a short command's CPU
# (bench/bench_submit.py). So fewer, larger passes (a long-running command is still collected); and at
# exit what still lives is frozen, so that the interpreter's last collection does not traverse it again.
gc.set_threshold(10_000, 10, 10)
atexit.register(gc.freeze)

import click  # noqa: E402

from . import (actions, db, doctor, emulator, proxy, reconcile, report, retention, serve, status, submit, token,
               transcripts, up)
from .common import CLIError, load_settings

# One entry per command group (`--help` lists the commands by name, whatever this order).
COMMAND_MODULES = (db, serve, proxy, submit, status, reconcile, emulator, report, token, transcripts, retention,
                   actions, doctor, up)


class _Root(click.Group):
    """The root group: a database without the schema, or out of reach, ends a command with one line (exit 2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - only database errors are turned into a line; the rest re-raised
            from ..db import database_problem

            problem = database_problem(exc, _database_url())
            if problem is None:
                raise
            raise CLIError(problem) from None


def _database_url() -> str:
    from ..config import ConfigError, Settings

    try:
        return Settings.from_env().database_url
    except ConfigError:
        return "DATABASE_URL"


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="webhook-service", prog_name="webhook-service")
def cli() -> None:
    """Stream audio files into Gladia live sessions and keep every result in SQL.

    Shell completion: eval "$(_WEBHOOK_SERVICE_COMPLETE=bash_source webhook-service)"
    (zsh_source, fish_source for those shells).
    """


for _module in COMMAND_MODULES:
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="webhook-service")


__all__ = ["CLIError", "cli", "load_settings", "main"]
