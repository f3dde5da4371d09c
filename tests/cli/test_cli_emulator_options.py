"""`webhook-service emulator`: its options come from the emulator's options dataclass, declared once."""

from __future__ import annotations

from dataclasses import fields

import pytest
from click.testing import CliRunner

from webhook_service.cli import cli
from webhook_service.cli.emulator import declared_fields
from webhook_service.emulator.options import EmulatorOptions, Faults

# The command line `webhook-service emulator` has always offered (README, demo, chaos harness, benchmarks).
OPTION_NAMES = [
    "--host", "--port", "--engine", "--api-key", "--max-sessions-per-key", "--idle-timeout", "--resume-grace",
    "--max-session-seconds", "--callback-timeout", "--callback-retries", "--callback-backoff", "--strict-schema",
    "--spool-dir",
    "--seed", "--drop-callbacks", "--duplicate-callbacks", "--delay-callbacks", "--callback-delay",
    "--reorder-callbacks", "--rest-errors", "--rest-error-status", "--rest-429", "--rest-fault-route",
    "--cut-after-chunks", "--cut-rate", "--cut-code", "--ack-delay",
]

pytestmark = pytest.mark.dbless


@pytest.fixture
def started(monkeypatch) -> list[EmulatorOptions]:
    """The options `emulator` would serve with (the server itself is not started)."""
    import webhook_service.emulator.server as server

    seen: list[EmulatorOptions] = []
    monkeypatch.setattr(server, "run", seen.append)
    return seen


def test_the_command_line_lists_every_declared_option_in_field_order():
    command = cli.commands["emulator"]
    assert [p.opts[0] for p in command.params if p.opts[0] != "--help"] == OPTION_NAMES
    assert [declared.name for _, _, declared in declared_fields()] == OPTION_NAMES
    exposed = {f.name for _, f, _ in declared_fields()}
    assert len(exposed) == len(OPTION_NAMES)  # one click parameter per field name: no clash between the groups
    # Every knob is on the command line but the backoff cap and the faults group itself.
    assert {f.name for f in fields(EmulatorOptions)} - exposed == {"callback_backoff_max_s", "faults"}
    assert {f.name for f in fields(Faults)} <= exposed


def test_defaults_are_the_dataclass_defaults_with_the_key_from_the_environment(started, monkeypatch):
    monkeypatch.delenv("GLADIA_API_KEY", raising=False)
    result = CliRunner().invoke(cli, ["emulator"])
    assert result.exit_code == 0, result.output
    assert started == [EmulatorOptions()]
    assert "Gladia emulator (sphinx) on http://127.0.0.1:8765" in result.output

    result = CliRunner().invoke(cli, ["emulator"], env={"GLADIA_API_KEY": "from-env"})
    assert started[-1].api_keys == ("from-env",)


def test_every_option_reaches_its_field(started):
    result = CliRunner().invoke(cli, [
        "emulator", "--host", "0.0.0.0", "--port", "0", "--engine", "vad", "--api-key", "a", "--api-key", "b",
        "--max-sessions-per-key", "2", "--idle-timeout", "3", "--resume-grace", "4", "--max-session-seconds", "5",
        "--callback-timeout", "6", "--callback-retries", "7", "--callback-backoff", "0.25", "--strict-schema",
        "--spool-dir", "/tmp/s",
        "--seed", "9", "--drop-callbacks", "0.1", "--duplicate-callbacks", "0.2", "--delay-callbacks", "0.3",
        "--callback-delay", "2.5", "--reorder-callbacks", "0.4", "--rest-errors", "0.5", "--rest-error-status", "502",
        "--rest-429", "0.6", "--rest-fault-route", "GET", "--rest-fault-route", "POST /v2/live",
        "--cut-after-chunks", "11", "--cut-rate", "0.7", "--cut-code", "1006", "--ack-delay", "0.05",
    ])
    assert result.exit_code == 0, result.output
    assert started == [EmulatorOptions(
        host="0.0.0.0", port=0, engine="vad", api_keys=("a", "b"), max_sessions_per_key=2, idle_timeout_s=3.0,
        resume_grace_s=4.0, max_session_s=5.0, callback_timeout_s=6.0, callback_retries=7, callback_backoff_s=0.25,
        strict_schema=True, spool_dir="/tmp/s", faults=Faults(
            seed=9, callback_drop_rate=0.1, callback_duplicate_rate=0.2, callback_delay_rate=0.3,
            callback_delay_s=2.5, callback_reorder_rate=0.4, rest_error_rate=0.5, rest_error_status=502,
            rest_429_rate=0.6, rest_fault_routes=("GET", "POST /v2/live"), ws_cut_after_chunks=11,
            ws_cut_rate=0.7, ws_cut_code=1006, ack_delay_s=0.05))]


@pytest.mark.parametrize("args,message", [
    (["--port", "99999"], "is not in the range 0<=x<=65535"),
    (["--engine", "x"], "is not one of 'sphinx', 'vad'"),
    (["--idle-timeout", "0"], "is not in the range x>0"),
    (["--rest-error-status", "404"], "is not in the range 500<=x<=599"),
    (["--api-key", ""], "invalid emulator option: at least one non-empty API key is needed"),
    (["--cut-code", "1005"], "invalid emulator option: ws_cut_code must be a non-1000 close code"),
])
def test_bad_values_end_with_status_2_and_name_the_option(started, args, message):
    result = CliRunner().invoke(cli, ["emulator", *args])
    assert result.exit_code == 2 and message in result.output
    assert started == []
