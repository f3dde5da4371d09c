"""API tokens: created with a secret shown once, stored as its SHA-256, verified in constant time.

A token is ``wso_`` followed by 256 random bits (``secrets.token_urlsafe(32)``):
the prefix makes a leaked token recognisable to secret scanners. The stored
hash is enough to find the row, and a database copy gives no token back; a
fast hash is right here because the secret is random, not a password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import TOKEN_SCOPES, OperatorToken, utcnow
from .operators import Operator

TOKEN_PREFIX = "wso_"
MAX_NAME = 100
MAX_EXPIRES_DAYS = 3650
# last_used_at is written at most this often per token, so reads do not turn into writes.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenError(ValueError):
    """Bad input to a token command; the message says what to do."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise TokenError(f"a token name is 1 to {MAX_NAME} printable characters, got {name[:40]!r}")
    return name


def create_token(session: Session, name: str, scope: str = "read",
                 expires_days: int | None = None) -> tuple[OperatorToken, str]:
    """A new token row and its secret (the only time the secret exists outside the caller)."""
    name = _check_name(name)
    if scope not in TOKEN_SCOPES:
        raise TokenError(f"scope must be one of {', '.join(TOKEN_SCOPES)}, got {scope!r}")
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
        raise TokenError(f"expiry must be between 1 and {MAX_EXPIRES_DAYS} days, got {expires_days}")
    if _active(session, name) is not None:
        raise TokenError(f"a token named {name!r} is in force; revoke it first or choose another name")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = OperatorToken(name=name, token_hash=_hash(secret), scope=scope, created_at=now,
                        expires_at=now + timedelta(days=expires_days) if expires_days else None)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # a concurrent create took the name
        raise TokenError(f"a token named {name!r} is in force; revoke it first or choose another name") from None
    return row, secret


def _active(session: Session, name: str) -> OperatorToken | None:
    return session.scalars(select(OperatorToken).where(
        OperatorToken.name == name, OperatorToken.revoked_at.is_(None))).first()


def verify_token(session: Session, presented: str, now: datetime | None = None) -> Operator | None:
    """The operator a presented token stands for, or None when it is unknown, revoked or expired."""
    if not presented or not presented.startswith(TOKEN_PREFIX) or len(presented) > 200:
        return None
    digest = _hash(presented)
    row = session.scalars(select(OperatorToken).where(OperatorToken.token_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = now or utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.commit()
    return Operator(name=row.name, scope=row.scope, via="token", token_id=row.id)


def token_in_force(session: Session, token_id: int, now: datetime | None = None) -> Operator | None:
    """The operator of a token id a dashboard session holds, or None once it is revoked or expired."""
    row = session.get(OperatorToken, token_id)
    now = now or utcnow()
    if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    return Operator(name=row.name, scope=row.scope, via="token", token_id=row.id)


def list_tokens(session: Session) -> list[OperatorToken]:
    """Every token, in force or not, oldest first (no secrets: only hashes are stored)."""
    return list(session.scalars(select(OperatorToken).order_by(OperatorToken.created_at, OperatorToken.id)))


def revoke_token(session: Session, name: str) -> OperatorToken:
    """Revoke the token in force with this name; it stops working on the next request."""
    row = _active(session, _check_name(name))
    if row is None:
        raise TokenError(f"no token in force named {name!r} (see `webhook-service token list`)")
    row.revoked_at = utcnow()
    return row
