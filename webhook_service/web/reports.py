"""Blueprint placeholder; filled in by its own issue."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("reports", __name__)
