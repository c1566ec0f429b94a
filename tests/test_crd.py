"""The CRD: generated from one source, in sync with crds/, structural, carrying the fixed names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftso import names
from ftso.api.crd import build_crd, render_crd_yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "crds" / "ftso.dev_faulttolerantservices.yaml"


def test_crd_file_matches_the_code() -> None:
    assert CRD_FILE.read_text() == render_crd_yaml(), (
        "crds/ drifted from operator/ftso/api/crd.py: run `make crd`"
    )


def test_names_are_the_fixed_ones() -> None:
    crd = build_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "faulttolerantservices.ftso.dev"
    assert spec["group"] == "ftso.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "FaultTolerantService"
    assert spec["names"]["shortNames"] == ["fts"]
    assert spec["names"]["categories"] == ["all", "ftso"]
    assert [v["name"] for v in spec["versions"]] == [names.VERSION]


def test_scale_and_status_subresources() -> None:
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns() -> None:
    columns = [c["name"] for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    for wanted in ("Mode", "Replicas", "Ready", "Primary", "Phase", "Age"):
        assert wanted in columns


def _walk(schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of schema nodes that are not structural: every node needs a type, except int-or-string ones."""
    problems = []
    if "type" not in schema and not schema.get("x-kubernetes-int-or-string"):
        problems.append(path or "<root>")
    for name, child in (schema.get("properties") or {}).items():
        problems += _walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        problems += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += _walk(schema["additionalProperties"], f"{path}{{}}")
    return problems


def test_schema_is_structural() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []


def test_status_carries_the_fixed_fields() -> None:
    status = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    for field in (
        "observedGeneration",
        "phase",
        "replicas",
        "readyReplicas",
        "servingReplicas",
        "primary",
        "term",
        "conditions",
    ):
        assert field in status["properties"]


def test_every_rule_has_a_message() -> None:
    rules: list[dict[str, str]] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            rules.extend(node.get("x-kubernetes-validations", []))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(build_crd())
    assert len(rules) >= 10
    assert all(rule.get("message") for rule in rules)


def test_the_chart_ships_the_same_crd() -> None:
    chart_copy = ROOT / "charts" / "ftso" / "crds" / "ftso.dev_faulttolerantservices.yaml"
    assert chart_copy.read_text() == CRD_FILE.read_text(), (
        "charts/ftso/crds/ drifted from crds/: run `make crd`"
    )


def test_owned_object_metadata_is_bounded_and_says_our_labels_win() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    shapes = {
        "service.metadata": spec["service"]["properties"]["metadata"],
        "disruption.metadata": spec["disruption"]["properties"]["metadata"],
        "checkpoint.jobMetadata": spec["checkpoint"]["properties"]["jobMetadata"],
    }
    for field, shape in shapes.items():
        labels, annotations = shape["properties"]["labels"], shape["properties"]["annotations"]
        assert labels["maxProperties"] == annotations["maxProperties"] == 32, field
        assert labels["additionalProperties"]["maxLength"] == 63, field
        assert annotations["additionalProperties"]["maxLength"] == 4096, field
        assert labels["additionalProperties"]["x-kubernetes-validations"], field
        assert names.LABEL_SERVICE in shape["description"] and "win" in shape["description"], field


def test_the_api_reference_matches_the_crd() -> None:
    from ftso.api.reference import render_api_markdown

    assert (ROOT / "docs" / "api.md").read_text() == render_api_markdown(), (
        "docs/api.md drifted from operator/ftso/api/crd.py: run `make crd`"
    )


def _field_paths(schema: dict[str, Any], path: str) -> list[str]:
    found = [path]
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        schema, path = schema["items"], path + "[]"
    for name, child in (schema.get("properties") or {}).items():
        found += _field_paths(child, f"{path}.{name}")
    return found


def test_the_api_reference_has_a_row_for_every_field_with_its_default_and_rules() -> None:
    from ftso.api.reference import render_api_markdown

    reference = render_api_markdown()
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    for root in ("spec", "status"):
        for path in _field_paths(schema[root], root):
            assert f"| `{path}` |" in reference, path
    row = next(line for line in reference.splitlines() if line.startswith("| `spec.failover.maxPerHour` |"))
    assert "| `12` |" in row and "failover.maxPerHour must be at most 3600" in row
