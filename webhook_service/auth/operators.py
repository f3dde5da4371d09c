"""Who an authenticated request acts for, and what its scope lets it do.

Two scopes: ``read`` sees everything, ``admin`` may also change or erase.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import TOKEN_SCOPES

SCOPE_RANK = {scope: rank for rank, scope in enumerate(TOKEN_SCOPES)}


@dataclass(frozen=True)
class Operator:
    """An authenticated operator: a token's name or the identity an authenticating proxy vouched for."""

    name: str
    scope: str
    via: str  # "token" or "proxy"
    token_id: int | None = None


def scope_allows(granted: str, required: str) -> bool:
    """True when a credential of scope ``granted`` may perform an action that needs ``required``."""
    return SCOPE_RANK.get(granted, -1) >= SCOPE_RANK[required]
