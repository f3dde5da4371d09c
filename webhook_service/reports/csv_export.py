"""Reports as CSV that a spreadsheet opens as data, never as formulas.

Report text comes from outside: transcripts, languages and error messages are
what Gladia (or whoever reached the receiver) sent. A spreadsheet evaluates a
cell that begins with ``=``, ``+``, ``-`` or ``@`` (and, in some, a tab or a
carriage return) as a formula, so such a text cell is written with a leading
single quote, as OWASP recommends for CSV injection. Only text columns are
escaped: a number column keeps its negative numbers as numbers.
"""

from __future__ import annotations

import csv
from typing import Any, Iterable, Sequence, TextIO

from .rows import Column

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any, kind: str) -> Any:
    """A value as a CSV cell: empty for None; a text cell that a spreadsheet would evaluate gets a quote."""
    if value is None:
        return ""
    if kind == "text" and isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def write_csv(stream: TextIO, columns: Sequence[Column], rows: Iterable[dict[str, Any]]) -> None:
    """A header line of column names, then one line per row, every text cell escaped."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([column.name for column in columns])
    for row in rows:
        writer.writerow([csv_cell(row.get(column.name), column.kind) for column in columns])
