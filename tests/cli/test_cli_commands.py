"""The `webhook-service` command groups: each module of the cli package is registered, and nothing is lost."""

from __future__ import annotations

import pkgutil
from importlib import import_module

import pytest
from click.testing import CliRunner

import webhook_service.cli as cli_package
from webhook_service.cli import COMMAND_MODULES, cli

pytestmark = pytest.mark.dbless

# The commands the README documents.
COMMANDS = {"beat", "cancel", "db", "delete", "doctor", "emulator", "export", "proxy", "purge", "reconcile", "report",
            "retry", "status", "submit", "token", "transcript", "up", "web", "worker"}


def test_every_command_module_is_registered():
    modules = [m.name for m in pkgutil.iter_modules(cli_package.__path__) if m.name != "__main__"]
    with_commands = {name for name in modules if hasattr(import_module(f"webhook_service.cli.{name}"), "COMMANDS")}
    assert with_commands == {m.__name__.rpartition(".")[2] for m in COMMAND_MODULES}
    assert set(cli.commands) == COMMANDS


def test_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == COMMANDS
