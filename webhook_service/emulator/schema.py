"""The emulator's check of a ``POST /v2/live`` body, worded as Gladia words it.

The schema is Gladia's ``StreamingRequest`` from :mod:`webhook_service.gladia.session_schema`,
the same definition the worker validates against. Every field is checked
against the documented enums and ranges, and unknown fields are refused, so a
client that works here does not send anything Gladia would reject (the
``region``-in-the-body 400 is a known field report). What Gladia documents
outside its OpenAPI description and real clients send is accepted, unless the
emulator runs with ``--strict-schema`` (the OpenAPI description alone). The
request comes back with every default filled in, which is what
``request_params`` shows and what the session obeys.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..gladia.session_schema import (
    CUSTOM_METADATA_MAX_CHARS,
    STREAMING_REQUEST,
    STRICT_STREAMING_REQUEST,
    Problem,
    problems,
    with_defaults,
    without_null_sections,
)

_TYPE_WORDS = {"boolean": "must be a boolean", "number": "must be a number", "integer": "must be an integer",
               "string": "must be a string", "object": "must be an object", "array": "must be an array"}


def _worded(problem: Problem) -> str:
    """One problem as Gladia's ``validation_errors`` words it: ``Field "a.b.0" ...``."""
    field = ".".join(map(str, problem.path))
    if problem.kind == "unknown":
        text = "is not allowed"
    elif problem.kind == "enum":
        text = f"must be one of the following values: {', '.join(map(str, problem.expected))}"
    elif problem.kind == "range":
        low, high = problem.expected
        text = f"must be between {low:g} and {high:g}"
    elif problem.kind == "min_items":
        text = f"must contain at least {problem.expected} elements"
    elif problem.kind == "required":
        text = f"is required when {problem.when} is true" if problem.when else "is required"
    elif problem.kind == "invalid":
        text = problem.message
    else:
        text = _TYPE_WORDS.get(problem.expected, f"must be of type {problem.expected}")
    return f'Field "{field}" {text}'


def _custom_metadata(body: dict, errors: list[str]) -> dict:
    """``custom_metadata`` apart from the request (GET shows it beside ``request_params``); ``{}`` when none."""
    metadata = body.pop("custom_metadata", None)
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        errors.append('Field "custom_metadata" must be an object')
        return {}
    if len(json.dumps(metadata)) > CUSTOM_METADATA_MAX_CHARS:
        errors.append(f'Field "custom_metadata" must be at most {CUSTOM_METADATA_MAX_CHARS} characters long')
        return {}
    return metadata


def validate_request(body: Any, *, strict: bool = False) -> tuple[dict, dict, list[str]]:
    """Check a POST /v2/live body (``strict``: against the OpenAPI description alone).

    Returns ``(request_params, custom_metadata, errors)``: the request with
    every default applied (without ``custom_metadata``, as GET shows it) and
    the list of ``validation_errors`` (empty when valid).
    """
    if not isinstance(body, dict):
        return {}, {}, ["Body must be a JSON object"]
    schema = STRICT_STREAMING_REQUEST if strict else STREAMING_REQUEST
    body = copy.deepcopy(body)
    errors: list[str] = []
    custom_metadata = _custom_metadata(body, errors)
    body = without_null_sections(body, schema)
    errors += [_worded(problem) for problem in problems(body, schema)]
    return with_defaults(body, schema), custom_metadata, errors
