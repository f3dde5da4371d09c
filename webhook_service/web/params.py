"""Query parameters checked against the OpenAPI description: the description is the rulebook.

``openapi.yaml`` says what each operation accepts (name, type, bounds,
allowed values, format); :func:`parse_query` applies exactly that to a
request before the view runs, so the served description and the checks that
answer 400 are one source and cannot drift apart. A view adds only what a
schema cannot say (a cursor it must decode, ``since`` before ``until``).

What a schema says, and what it does here:

* an unknown parameter: 400 naming the allowed ones (a typo never silently
  widens a query);
* ``type: integer`` with ``minimum``/``maximum``: decimal digits only, in range;
* ``type: string`` with ``minLength``/``maxLength``, ``enum``, ``pattern``
  and ``format: date`` (``YYYY-MM-DD``, a real day);
* ``type: array`` with ``style: form, explode: false`` (``state=a,b``): each
  item checked as above;
* ``default``: the value when the parameter is absent;
* every string: no NUL (no database stores one in text).

A new route with query parameters: describe them in ``openapi.yaml`` under
its ``operationId`` and call ``parse_query("thatOperationId", request.args)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Mapping, Optional

from .openapi import openapi_document

_INTEGER = re.compile(r"[+-]?[0-9]{1,100}")  # longer is no number anyone means; shorter gets its range


class InvalidParameter(ValueError):
    """A query parameter breaks the description; the message names it (400)."""


@dataclass(frozen=True)
class Rule:
    """One query parameter, as its schema in the description says."""

    name: str
    schema: Mapping[str, Any]

    @property
    def default(self) -> Any:
        return self.schema.get("default")


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema, with a local ``$ref`` (``#/components/schemas/X``) followed."""
    ref = schema.get("$ref")
    if not ref:
        return schema
    node: Any = openapi_document()
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return _resolve(node)


@lru_cache(maxsize=None)
def rules(operation_id: str) -> dict[str, Rule]:
    """The query parameters of ``operation_id``, by name (KeyError: no such operation in the description)."""
    for item in openapi_document()["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                return {p["name"]: Rule(p["name"], _resolve(p.get("schema", {})))
                        for p in operation.get("parameters", []) if p.get("in") == "query"}
    raise KeyError(f"no operation {operation_id!r} in openapi.yaml")


def _shown(raw: str) -> str:
    return repr(raw[:40])


def _integer(name: str, raw: str, schema: Mapping[str, Any]) -> int:
    if not _INTEGER.fullmatch(raw.strip()):
        raise InvalidParameter(f"invalid {name} {_shown(raw)}: must be an integer")
    value = int(raw)
    low, high = schema.get("minimum"), schema.get("maximum")
    if (low is not None and value < low) or (high is not None and value > high):
        bound = (f"between {low} and {high}" if low is not None and high is not None
                 else f">= {low}" if low is not None else f"<= {high}")
        raise InvalidParameter(f"invalid {name} {_shown(raw) if len(raw) <= 40 else 'of ' + str(len(raw)) + ' digits'}: "
                               f"must be {bound}")
    return value


def _day(name: str, raw: str) -> str:
    try:
        if len(raw) != 10 or not raw.isascii():
            raise ValueError
        date.fromisoformat(raw)
    except ValueError:
        raise InvalidParameter(f"invalid {name} {_shown(raw)}: expected a UTC date as YYYY-MM-DD") from None
    return raw


@lru_cache(maxsize=None)
def _pattern(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _string(name: str, raw: str, schema: Mapping[str, Any]) -> Any:
    if "\x00" in raw:
        raise InvalidParameter(f"invalid {name}: NUL is not allowed")
    low, high = schema.get("minLength"), schema.get("maxLength")
    if (low is not None and len(raw) < low) or (high is not None and len(raw) > high):
        raise InvalidParameter(f"invalid {name}: must have {low or 0} to {high if high is not None else 'any'} "
                               f"characters, got {len(raw)}")
    if "enum" in schema and raw not in schema["enum"]:
        raise InvalidParameter(f"invalid {name} {_shown(raw)}: must be one of {', '.join(map(str, schema['enum']))}")
    if "pattern" in schema and not _pattern(schema["pattern"]).search(raw):
        raise InvalidParameter(f"invalid {name} {_shown(raw)}: {schema.get('description') or 'see the API description'}")
    if schema.get("format") == "date":
        return _day(name, raw)
    return raw


def _value(name: str, raw: str, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type", "string")
    if kind == "integer":
        return _integer(name, raw, schema)
    if kind == "array":
        items = _resolve(schema.get("items", {}))
        values = [part.strip() for part in raw.split(",") if part.strip()]
        if not values:
            raise InvalidParameter(f"invalid {name}: give one or more values, comma-separated")
        try:
            return tuple(_value(name, part, items) for part in values)
        except InvalidParameter as exc:
            raise InvalidParameter(f"{exc} (comma-separated)") from None
    return _string(name, raw, schema)


def parse_query(operation_id: str, args: Mapping[str, str]) -> dict[str, Optional[Any]]:
    """Every query parameter of the operation: converted, or its default (None without one).

    Raises :class:`InvalidParameter` on the first parameter that breaks the
    description, in the order the description lists them (unknown names first).
    """
    known = rules(operation_id)
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise InvalidParameter(f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    return {name: _value(name, args[name], rule.schema) if name in args else rule.default
            for name, rule in known.items()}
