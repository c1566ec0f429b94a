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


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to '-'."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_in_the_docs_resolves() -> None:
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):
                continue  # a URL: not ours to check offline
            file_part, _, anchor = target.partition("#")
            linked = (doc.parent / file_part).resolve() if file_part else doc
            assert linked.exists(), f"{doc.name} links to {target}, which does not exist"
            if anchor:
                assert anchor in _anchors(linked), f"{doc.name} links to {target}: no such heading"


def test_the_docs_are_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("api.md", "troubleshooting.md", "upgrading.md"):
        assert f"](docs/{name})" in readme, name


def test_troubleshooting_names_only_the_operators_real_conditions_and_reasons() -> None:
    from ftso import names

    known = {
        str(value)
        for enum in (
            names.ConditionType,
            names.Reason,
            names.EventReason,
            names.Phase,
            names.Health,
            names.Promotion,
            names.SwitchoverResult,
        )
        for value in enum
    }
    from ftso.api.crd import build_crd

    known |= {c["name"] for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    # Kubernetes' own words the guide quotes: Job failure reasons.
    known |= {"DeadlineExceeded", "BackoffLimitExceeded"}
    guide = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    quoted = set(re.findall(r"`([A-Z][a-z]+(?:[A-Z][a-z]+)+|[A-Z][a-z]+)`", guide))
    assert quoted - known == set(), "names the operator does not write"
    warnings = {
        names.EventReason.FAILED_CREATE,
        names.EventReason.FAILOVER_THROTTLED,
        names.EventReason.SWITCHOVER_REFUSED,
        names.EventReason.NODE_LOSS_SUSPENDED,
        names.EventReason.CHECKPOINT_FAILED,
        names.EventReason.HOOK_FAILED,
        names.EventReason.INVALID_SPEC,
        names.EventReason.PRIMARY_UNAVAILABLE,
    }
    assert {w for w in warnings if f"`{w}`" not in guide} == set(), "a Warning Event without an entry"
