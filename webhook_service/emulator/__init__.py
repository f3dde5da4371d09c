"""A local Gladia-compatible live (v2) server: REST, WebSocket, callbacks, fault injection.

Run it with ``webhook-service emulator``; start it inside a program (tests, the
demo, benchmarks) with :func:`start_emulator`. Nothing else in the package
imports this sub-package.
"""

from .options import EmulatorOptions, Faults, OptionError


def __getattr__(name: str):
    # The server is imported when first used: the CLI reads only the options to build its command,
    # and every other command (submit above all) should not pay for the server's imports.
    if name in ("RunningEmulator", "start_emulator"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["EmulatorOptions", "Faults", "OptionError", "RunningEmulator", "start_emulator"]
