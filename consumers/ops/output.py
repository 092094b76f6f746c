"""What the commands print: tables for people, or JSON for scripts (``--output json``).

Every command prints through ``console`` and shows its tables with ``show``. In JSON mode
each table is one JSON object on its own stdout line (``{"title": ..., "rows": [{column:
value}, ...]}``) and everything else the command says goes to stderr, so ``vigil models list
--output json | jq`` reads JSON only. A column of numbers is declared so by its right
justification (as a table for people shows numbers); its cells become JSON numbers. Every
other cell stays a string: a version ``1.10`` is never the number 1.1.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
errors = Console(stderr=True)
_json = False


def set_output(json_output: bool) -> None:
    """Tables as JSON on stdout and the rest on stderr, or everything for people on stdout
    (set for each command: ``main`` may run several in one process, as the tests do)."""
    global _json
    _json = json_output
    console.file = sys.stderr if json_output else None  # type: ignore[assignment]  # None: stdout as it is then


def json_output() -> bool:
    """Whether the command prints JSON for scripts (``--output json``)."""
    return _json


def show(table: Table) -> None:
    """Print ``table`` for people, or as one line of JSON."""
    if _json:
        print(json.dumps(table_document(table)), flush=True)
    else:
        console.print(table)


def show_document(document: dict[str, Any]) -> None:
    """Print a JSON document: indented for people, or as one line on stdout."""
    if _json:
        print(json.dumps(document), flush=True)
    else:
        console.print_json(data=document)


def table_document(table: Table) -> dict[str, Any]:
    """``table`` as ``{"title", "rows"}``; the cells of right-justified columns that read as
    numbers become numbers."""
    headers = [_plain(column.header) for column in table.columns]
    columns = [
        [_number(cell) if column.justify == "right" else _plain(cell) for cell in column.cells]
        for column in table.columns
    ]
    rows = [dict(zip(headers, row, strict=True)) for row in zip(*columns, strict=True)]
    return {"title": _plain(table.title) if table.title else None, "rows": rows}


def _plain(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain


def _number(cell: Any) -> Any:
    """The cell's number (thousands separators allowed), or its text when it is not one."""
    text = _plain(cell)
    for kind in (int, float):
        try:
            return kind(text.replace(",", ""))
        except ValueError:
            continue
    return text
