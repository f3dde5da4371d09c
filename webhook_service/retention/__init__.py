"""Deletion and retention: a session erased on request (here and at Gladia), and what the retention
settings no longer allow kept, erased by the sweeper. Every erasure leaves an audit row, never content.

* :mod:`.erase`: what erasing a session's content removes and what it keeps for the reports;
* :mod:`.delete`: an operator's delete of one session (Gladia first, then here);
* :mod:`.policy`: ``RETENTION_DAYS``, ``INBOX_RETENTION_DAYS`` and ``GLADIA_DELETE_AFTER_RECONCILE``, in
  bounded batches.
"""

from __future__ import annotations

from .delete import DeleteRefused, GladiaRefused, delete_session, describe
from .erase import Erased, erase_content
from .policy import PurgePlan, PurgeReport, plan, purge

__all__ = ["DeleteRefused", "Erased", "GladiaRefused", "PurgePlan", "PurgeReport", "delete_session",
           "describe", "erase_content", "plan", "purge"]
