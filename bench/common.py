"""Shared bench helpers: timing, tables and the JSON report."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).with_name("results")


@dataclass
class Figure:
    """One measured figure and what it is compared with."""

    name: str
    value: float
    unit: str
    baseline: str = ""


def machine() -> dict[str, Any]:
    """Facts about where the run happened."""
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}


def report(title: str, figures: list[Figure], extra: dict[str, Any] | None = None) -> Path:
    """Print a table and write ``results/<title>-<time>.json``."""
    table = Table(title=title)
    for column in ("figure", "value", "unit", "baseline (same run)"):
        table.add_column(column)
    for f in figures:
        table.add_row(f.name, f"{f.value:,.1f}", f.unit, f.baseline)
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{title}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {"title": title, "machine": machine(), "figures": [f.__dict__ for f in figures], **(extra or {})},
            indent=2,
        )
    )
    return path
