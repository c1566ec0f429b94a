"""The scale benchmark's baseline: what a user builds by hand, submitted in the order a user submits it."""

from __future__ import annotations

from typing import Any

from bench.scale import _baseline_objects


def _kinds_and_names(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def test_by_app_puts_each_apps_services_and_budget_before_its_statefulset() -> None:
    assert _kinds_and_names(_baseline_objects(2, 3, True, "by-app")) == [
        ("Service", "s0-0"),
        ("Service", "s0-1"),
        ("Service", "s0-2"),
        ("PodDisruptionBudget", "s0"),
        ("StatefulSet", "s0"),
        ("Service", "s1-0"),
        ("Service", "s1-1"),
        ("Service", "s1-2"),
        ("PodDisruptionBudget", "s1"),
        ("StatefulSet", "s1"),
    ]


def test_by_kind_submits_every_statefulset_before_any_service() -> None:
    kinds = [kind for kind, _ in _kinds_and_names(_baseline_objects(3, 2, True, "by-kind"))]
    assert kinds == ["StatefulSet"] * 3 + ["Service"] * 6 + ["PodDisruptionBudget"] * 3


def test_each_side_selects_only_its_own_pods_and_the_budget_is_optional() -> None:
    objects = _baseline_objects(2, 1, False, "by-app")
    assert [o["kind"] for o in objects] == ["Service", "StatefulSet"] * 2
    for service, workload in zip(objects[::2], objects[1::2], strict=True):
        app = workload["spec"]["template"]["metadata"]["labels"]["app"]
        assert service["spec"]["selector"] == {"app": app}
        assert workload["spec"]["selector"]["matchLabels"] == {"app": app}
