"""Operator credentials: API tokens, and who is asking (an :class:`Operator` with a scope).

Every route but the receiver's needs an operator; this package decides whether
a presented credential names one. The web gate and the `token` commands call it.
"""

from __future__ import annotations

from .operators import Operator, scope_allows
from .tokens import (TOKEN_PREFIX, TokenError, create_token, list_tokens, revoke_token, token_in_force,
                     verify_token)

__all__ = ["Operator", "TOKEN_PREFIX", "TokenError", "create_token", "list_tokens", "revoke_token",
           "scope_allows", "token_in_force", "verify_token"]
