"""Percentiles computed in Python, so SQLite (no ``percentile_cont``) and PostgreSQL give the same numbers."""

from __future__ import annotations

import math
from typing import Optional, Sequence

LOW_CONFIDENCE_PERCENTILE = 0.10
LATENCY_PERCENTILES = (0.50, 0.90, 0.99)


def percentile_cont(sorted_values: Sequence[float], fraction: float) -> Optional[float]:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the closest ranks."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    low, high = sorted_values[lower], sorted_values[upper]
    return low + (high - low) * (position - lower)
