"""The `webhook-service` command: the root group and the registry of command groups.

Every sub-command reads its settings from the environment (see config.py); a
bad setting or bad input ends with a one-line message and exit status 2,
never a traceback (``common.CLIError``).

Each command group is one module of this package exposing ``COMMANDS``; a new
group is one module plus its entry in ``COMMAND_MODULES``. The modules import
the rest of the service inside their commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import click

from . import db, emulator, proxy, reconcile, report, retention, serve, status, submit, token, transcripts
from .common import CLIError, load_settings

# One entry per command group (`--help` lists the commands by name, whatever this order).
COMMAND_MODULES = (db, serve, proxy, submit, status, reconcile, emulator, report, token, transcripts, retention)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Stream audio files into Gladia live sessions and keep every result in SQL."""


for _module in COMMAND_MODULES:
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="webhook-service")


__all__ = ["CLIError", "cli", "load_settings", "main"]
