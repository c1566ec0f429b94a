"""docs/bad-input.md stays true: every row names a test, and every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "bad-input.md"


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_row_of_the_bad_input_table_names_existing_tests() -> None:
    rows = [line for line in TABLE.read_text(encoding="utf-8").splitlines() if line.startswith("| ")][2:]
    assert len(rows) >= 20
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        references = re.findall(r"`([\w/]+\.py)::(\w+)`", cells[-1])
        if not references:
            assert cells[-1] == "same", f"a row without a test: {row}"
        for path, name in references:
            assert name in _test_functions(ROOT / path), (
                f"{path}::{name} named in {TABLE.name} does not exist"
            )
