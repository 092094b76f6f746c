"""The suite's own shape: integration and fault modules carry their marker (``make test`` and
``make test-drills`` select by it), and no test module imports another (shared helpers live
in ``tests/*_helpers.py`` and ``tests/*_fixtures.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def modules_in(folder: str) -> list[Path]:
    return sorted((TESTS / folder).glob("test_*.py"))


def test_every_integration_and_fault_module_carries_its_marker() -> None:
    missing = [
        path.name
        for folder, marker in (("integration", "integration"), ("faults", "faults"))
        for path in modules_in(folder)
        if f"pytest.mark.{marker}" not in path.read_text()
    ]
    assert missing == []


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in TESTS.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[-1].startswith("test_")
            ):
                offenders.append(f"{path.relative_to(TESTS)} imports {node.module}")
    assert offenders == []
