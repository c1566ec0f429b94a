"""The chart's monitoring pieces fit the operator: every metric the dashboard and the alert rules query is
one the operator exports, the rules pass Prometheus's own checker (promtool, built from the Go module proxy
by hack/promtool.sh), each alert links a runbook section that exists.

Metric names are taken from the PromQL expressions by a small tokenizer rather than a PromQL parser: the
expressions are ours and simple, and a tokenizer that drops strings, label matchers, ranges, grouping
clauses and function names is enough to find every metric name in them."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_metrics import exported_names

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "charts" / "ftso" / "files"
RULES = FILES / "rules.yaml"
DASHBOARD = FILES / "dashboard.json"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
PROMTOOL_SCRIPT = ROOT / "hack" / "promtool.sh"

# Series Prometheus makes itself, not the operator.
FROM_PROMETHEUS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_FUNCTION = re.compile(r"\b[a-zA-Z_][a-zA-Z0-9_]*\s*\(")
_IDENTIFIER = re.compile(r"(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expression: str) -> set[str]:
    text = _STRING.sub(" ", expression)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _FUNCTION.sub("(", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in KEYWORDS}


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p.get("targets") for p in panels), "a panel without a query"
    queries = [t["expr"] for p in panels for t in p["targets"]]
    variables = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries + [re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", v) for v in variables]


def test_the_tokenizer_finds_metric_names_only() -> None:
    expression = (
        'histogram_quantile(0.99, sum by (le) (rate(workqueue_work_duration_seconds_bucket{job="ftso", '
        'name=~"$name"}[$__rate_interval]))) / ignoring(pod) time() - max by (namespace, name) '
        "(ftso_checkpoint_last_success_timestamp_seconds offset 5m) > bool 1 and on(name) up"
    )
    assert metric_names(expression) == {
        "workqueue_work_duration_seconds_bucket",
        "ftso_checkpoint_last_success_timestamp_seconds",
        "up",
    }


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_queries_use_only_exported_metrics(source: str, metrics_served: Any) -> None:
    expressions = [r["expr"] for r in rules()] if source == "rules" else dashboard_expressions()
    used = set().union(*(metric_names(e) for e in expressions))
    assert used, "no metric found: the tokenizer is broken"
    unknown = used - exported_names() - FROM_PROMETHEUS
    assert not unknown, f"the {source} query metrics the operator does not export: {sorted(unknown)}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_has_a_runbook_section() -> None:
    anchors = _anchors(RUNBOOKS.read_text())
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        assert url.split("#")[0].endswith("docs/runbooks.md"), url
        assert url.split("#")[1] in anchors, f"{rule['alert']}: docs/runbooks.md has no section {url}"
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]


def _promtool() -> str:
    """The cached promtool, built by `make unit` (hack/promtool.sh: about 5 minutes cold on two cores)."""
    pinned = re.search(r"PROMETHEUS_VERSION:-(v[\d.]+)", PROMTOOL_SCRIPT.read_text())
    cache = Path(
        os.environ.get("FTSO_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ftso"
    )
    stamp = cache / "bin" / ".promtool.version"
    assert pinned is not None, "hack/promtool.sh pins no version"
    assert stamp.exists() and stamp.read_text().strip() == pinned.group(1), (
        "promtool is not built: run `make promtool` (make unit and make test do)"
    )
    return subprocess.run([str(PROMTOOL_SCRIPT)], check=True, capture_output=True, text=True).stdout.strip()


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_the_alerts_fire_as_the_runbooks_say(tmp_path: Path) -> None:
    """promtool's rule unit tests: each alert fires on the series that mean it, and not before its `for`."""
    promtool = _promtool()
    cases = tmp_path / "rules_test.yaml"
    cases.write_text(
        (ROOT / "tests" / "data" / "rules_test.yaml").read_text().replace("RULES_FILE", str(RULES))
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(cases)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
