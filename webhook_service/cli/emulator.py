"""`webhook-service emulator`: the local Gladia server, with one option per field of its options dataclass.

The options are not written here: each field of ``EmulatorOptions`` and
``Faults`` that carries a ``Flag`` in its metadata becomes one click option
(name, help, type and bounds from the flag and the field's annotation, the
default from the field). A new emulator knob is declared once, in
``emulator/options.py``.
"""

from __future__ import annotations

import os
import typing
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any, Callable

import click

from ..emulator.options import EmulatorOptions, Flag, OptionError, flag_of
from ..logging_setup import configure_logging
from .common import CLIError


def declared_fields(cls: type = EmulatorOptions) -> list[tuple[type, Field, Flag]]:
    """(owning dataclass, field, flag) of every field on the command line, in declaration order.

    A field whose type is itself a dataclass (``faults``) contributes its own fields in its place.
    """
    found = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            found.extend(declared_fields(hints[f.name]))
        elif (declared := flag_of(f)) is not None:
            found.append((cls, f, declared))
    return found


def click_option(owner: type, f: Field, declared: Flag) -> Callable:
    """The click option decorator standing for one dataclass field."""
    annotation = typing.get_type_hints(owner)[f.name]
    if annotation is bool:  # an on/off switch, off by default
        return click.option(declared.name, f.name, is_flag=True, default=f.default, help=declared.help)
    multiple = typing.get_origin(annotation) is tuple
    default = () if declared.env else f.default  # with `env`, "not given" must stay visible
    if default is MISSING:  # pragma: no cover - every exposed field has a plain default
        raise TypeError(f"{owner.__name__}.{f.name} needs a default to be a command-line option")
    return click.option(declared.name, f.name, type=_click_type(annotation, declared), multiple=multiple,
                        default=default, show_default=bool(default), help=declared.help)


def _click_type(annotation: Any, declared: Flag) -> Any:
    if declared.choices:
        return click.Choice(declared.choices)
    base = next((t for t in (int, float) if annotation is t or t in typing.get_args(annotation)), str)
    if base is str or (declared.minimum is None and declared.maximum is None):
        return base
    range_type = click.IntRange if base is int else click.FloatRange
    return range_type(declared.minimum, declared.maximum, min_open=declared.minimum_excluded)


def options_from(values: dict[str, Any]) -> EmulatorOptions:
    """The validated EmulatorOptions (with its Faults) that the parsed command line stands for."""
    return _build(EmulatorOptions, values).validated()


def _build(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values)
        elif (declared := flag_of(f)) is not None:
            kwargs[f.name] = _given_or_env(f, declared, values[f.name])
    return cls(**kwargs)


def _given_or_env(f: Field, declared: Flag, value: Any) -> Any:
    """The command-line value; when not given and the flag names a variable: the environment, else the default."""
    if not declared.env or value:
        return value
    return (os.environ[declared.env],) if os.environ.get(declared.env) else f.default


def _with_declared_options(command: Callable) -> Callable:
    for owner, f, declared in reversed(declared_fields()):  # click lists the last decorator applied first
        command = click_option(owner, f, declared)(command)
    return command


@click.command()
@_with_declared_options
def emulator(**values: Any) -> None:
    """Run the local Gladia-compatible live v2 server (REST + WebSocket + callbacks + faults)."""
    from ..emulator.server import run

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), os.environ.get("LOG_FORMAT", "text"))
    try:
        options = options_from(values)
    except OptionError as exc:
        raise CLIError(f"invalid emulator option: {exc}") from None
    click.echo(f"Gladia emulator ({options.engine}) on http://{options.host}:{options.port} "
               f"(admin API under /_emulator/)", err=True)
    try:
        run(options)
    except OSError as exc:  # port in use, bad host
        raise CLIError(f"cannot serve on {options.host}:{options.port}: {exc}") from None


COMMANDS = (emulator,)
