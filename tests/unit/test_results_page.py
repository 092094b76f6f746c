"""bench/RESULTS.md is written from the result files, never by hand: each bench's newest run
gives its table, and the committed page is what the committed results give."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import results_page  # noqa: E402  (bench/ is scripts, not a package)


def result(folder: Path, name: str, title: str, value: float, baseline: str = "") -> None:
    figure = {"name": "rate", "value": value, "unit": "/s", "baseline": baseline}
    (folder / name).write_text(json.dumps({"title": title, "machine": {"cpus": 2}, "figures": [figure]}))


def test_each_bench_shows_its_newest_run_with_its_baseline(tmp_path: Path) -> None:
    result(tmp_path, "peers-20261101T000000.json", "peers", 1.0, "old")
    result(tmp_path, "peers-20261207T000000.json", "peers", 2.5, "quix 1.0 | same run")
    result(tmp_path, "drill-20261207T000000.json", "drill", float("nan"))
    page = results_page.page(tmp_path)
    assert "| rate | 2.5 | /s | quix 1.0 \\| same run |" in page and "old" not in page
    assert "| rate | n/a | /s |" in page  # a figure the run did not reach
    assert page.index("## drill") < page.index("## peers")


def test_the_committed_page_is_what_the_committed_results_give() -> None:
    assert (ROOT / "bench" / "RESULTS.md").read_text() == results_page.page()
