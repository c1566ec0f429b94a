"""Spec parsing, defaults shared with the CRD, and the checks only the operator can make."""

from __future__ import annotations

import pytest

from ftso.api.crd import build_spec_schema
from ftso.api.spec import (
    DEFAULT_REPLICAS,
    operator_judged_problems,
    parse_spec,
    resolve_max_unavailable,
)

from .factories import raw_spec


def test_defaults_match_the_crd() -> None:
    parsed = parse_spec({"template": raw_spec()["template"]})
    schema = build_spec_schema()["properties"]
    assert parsed.replicas == DEFAULT_REPLICAS == schema["replicas"]["default"]
    assert parsed.mode == schema["mode"]["default"]
    assert parsed.max_unavailable == schema["disruption"]["properties"]["maxUnavailable"]["default"]
    assert list(parsed.spread.topology_keys) == schema["spread"]["properties"]["topologyKeys"]["default"]
    assert (
        parsed.health.unready_timeout_seconds
        == schema["health"]["properties"]["unreadyTimeoutSeconds"]["default"]
    )


@pytest.mark.parametrize(
    ("value", "replicas", "expected"),
    [(1, 3, 1), (2, 3, 2), ("50%", 4, 2), ("10%", 3, 1), ("0%", 3, 1), ("100%", 5, 5), ("bad", 3, 1)],
)
def test_resolve_max_unavailable(value: int | str, replicas: int, expected: int) -> None:
    assert resolve_max_unavailable(value, replicas) == expected


def test_reserved_labels_are_reported() -> None:
    spec = raw_spec()
    spec["template"]["metadata"]["labels"]["ftso.dev/role"] = "primary"
    problems = operator_judged_problems(parse_spec(spec))
    assert len(problems) == 1 and "reserved" in problems[0]


def test_unknown_named_target_port_is_reported() -> None:
    spec = raw_spec(service={"ports": [{"name": "web", "port": 80, "targetPort": "nope"}]})
    assert "nope" in operator_judged_problems(parse_spec(spec))[0]


def test_a_valid_spec_has_no_problems() -> None:
    assert operator_judged_problems(parse_spec(raw_spec())) == []
