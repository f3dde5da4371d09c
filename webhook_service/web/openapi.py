"""`GET /api/openapi.json`: the JSON API's OpenAPI 3.1 description, from the one checked-in document.

The description is a YAML file next to this module rather than generated from
code: it is read and reviewed as one document, it grows by editing it (a route,
a parameter, a schema), and the tests hold it to the app (validation against
the OpenAPI 3.1 schema, every ``/api`` route of the URL map present, and a
schemathesis fuzz run of the API against it). It is an operator route like the
rest of ``/api``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint

DOCUMENT = Path(__file__).with_name("openapi.yaml")

bp = Blueprint("openapi", __name__)


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The parsed description (read once per process)."""
    return yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))


@bp.get("/api/openapi.json")
def openapi_json():
    return openapi_document()
