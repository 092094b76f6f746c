"""Write ``bench/RESULTS.md``: one current table per benchmark, from ``bench/results/*.json``.

Each bench's newest result file (by the time in its name) gives its table, as the bench
printed it: every figure beside the baseline measured in the same run, with the machine it
ran on. A bench without a result file is listed as not run. Nothing is copied by hand:

    python bench/results_page.py          # rewrite bench/RESULTS.md
    python bench/results_page.py --check  # exit 1 when RESULTS.md is not what the files give
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PAGE = BENCH / "RESULTS.md"


def newest_results(folder: Path = RESULTS) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Each bench title's newest result file and its document."""
    newest: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.json")):  # names end in a sortable time
        document = json.loads(path.read_text())
        newest[document["title"]] = (path, document)
    return newest


def benches(folder: Path = BENCH) -> list[str]:
    """The benchmark scripts (every ``bench/*.py`` that writes a result)."""
    return sorted(p.stem for p in folder.glob("*.py") if "report(" in p.read_text() and p.stem != "common")


def _cell(value: float) -> str:
    return "n/a" if value != value else f"{value:,.1f}"  # NaN: the run did not reach it


def table(path: Path, document: dict[str, Any]) -> list[str]:
    """The markdown of one result: its machine, its run's time and its figures."""
    machine = document.get("machine", {})
    about = ", ".join(f"{key} {value}" for key, value in machine.items()) or "machine not recorded"
    lines = [f"## {document['title']}", "", f"`results/{path.name}` ({about})", ""]
    lines += ["| figure | value | unit | baseline (same run) |", "| --- | ---: | --- | --- |"]
    for figure in document["figures"]:
        baseline = str(figure.get("baseline", "")).replace("|", "\\|")
        lines.append(f"| {figure['name']} | {_cell(figure['value'])} | {figure['unit']} | {baseline} |")
    return [*lines, ""]


def page(folder: Path = RESULTS) -> str:
    """The whole of RESULTS.md."""
    found = newest_results(folder)
    lines = [
        "# Benchmark results",
        "",
        "Written by `python bench/results_page.py` from each bench's newest file in",
        "`bench/results/`; `bench/README.md` says what each bench measures and against what.",
        "History, with the figures of earlier changes, is in `CHANGELOG.md`.",
        "",
    ]
    for title in sorted(found):
        lines += table(*found[title])
    missing = [name for name in benches() if name not in found]
    if missing:
        lines += ["## Not run since results were kept", "", ", ".join(f"`{name}.py`" for name in missing), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = page()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(
                f"{PAGE} is not what bench/results/ gives: run python bench/results_page.py", file=sys.stderr
            )
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
