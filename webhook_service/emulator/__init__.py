"""A local Gladia-compatible live (v2) server: REST, WebSocket, callbacks, fault injection.

Run it with ``webhook-service emulator``; start it inside a program (tests, the
demo, benchmarks) with :func:`start_emulator`. Nothing else in the package
imports this sub-package.
"""

from .options import EmulatorOptions, Faults, OptionError
from .runner import RunningEmulator, start_emulator

__all__ = ["EmulatorOptions", "Faults", "OptionError", "RunningEmulator", "start_emulator"]
