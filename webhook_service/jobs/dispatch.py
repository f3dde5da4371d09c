"""What job lifecycle code needs from a task queue, as an interface.

The domain decides *that* a job must stream or be reconciled; how the work
travels (Celery in production, a recorder in tests) is the caller's choice:
``worker.dispatch.CeleryDispatcher`` implements this protocol, and nothing in
``jobs`` imports the worker.
"""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    """Sends work for a job to whoever runs it."""

    def stream(self, job_id: str, resume: bool) -> None:
        """Stream (or resume streaming) the job; ``resume``: its session waits for it at Gladia."""

    def wake(self, job_id: str) -> None:
        """Start a job waiting for a session slot now (one was just freed), ahead of any backlog."""

    def reconcile(self, job_id: str, trigger: str) -> None:
        """Check the job's session against Gladia's record and repair what is missing."""
