"""Labels and annotations from the spec on the Services, the PDB and checkpoint Jobs: built, kept in sync,
and only ever the keys the spec asked for; whatever other writers add stays theirs."""

from __future__ import annotations

import copy
from typing import Any

from ftso import names
from ftso.api.spec import operator_judged_problems, parse_spec
from ftso.builders import Owner, build_checkpoint_job, build_pdb, build_services
from ftso.model import pod_view
from ftso.reconcile import decide

from .factories import observed, pod, raw_spec

OWNER = Owner("demo", "ns", "uid-demo")


def _spec(service: dict[str, Any] | None = None, pdb: dict[str, Any] | None = None) -> dict[str, Any]:
    raw = raw_spec()
    if service is not None:
        raw["service"] = {"metadata": service}
    if pdb is not None:
        raw["disruption"] = {"metadata": pdb}
    return raw


def _steady_pods() -> list[dict[str, Any]]:
    return [pod(i, role="primary" if i == 0 else "replica", serving=True) for i in range(3)]


def test_services_carry_the_spec_metadata_under_our_own_labels() -> None:
    spec = parse_spec(
        _spec(
            {
                "labels": {"team": "payments", names.LABEL_MANAGED_BY: "helm"},
                "annotations": {"cloud.example/lb-internal": "true"},
            }
        )
    )
    for service in build_services(spec, OWNER):
        metadata = service["metadata"]
        assert metadata["labels"]["team"] == "payments"
        assert metadata["labels"][names.LABEL_MANAGED_BY] == names.MANAGED_BY, "our labels win"
        assert metadata["labels"][names.LABEL_SERVICE] == "demo"
        assert metadata["annotations"]["cloud.example/lb-internal"] == "true"
        assert metadata["annotations"][names.ANNOTATION_SPEC_METADATA] == (
            '{"annotations":["cloud.example/lb-internal"],"labels":["team"]}'
        )


def test_without_spec_metadata_nothing_is_added() -> None:
    spec = parse_spec(raw_spec())
    assert all(
        "annotations" not in s["metadata"] for s in [*build_services(spec, OWNER), build_pdb(spec, OWNER)]
    )


def test_the_pdb_and_checkpoint_jobs_carry_their_own_metadata() -> None:
    raw = _spec(pdb={"labels": {"policy": "strict"}})
    raw["checkpoint"] = {
        "template": {"name": "save", "image": "save:1"},
        "jobMetadata": {"labels": {"cost-center": "42"}, "annotations": {"note": "nightly"}},
    }
    spec = parse_spec(raw)
    assert build_pdb(spec, OWNER)["metadata"]["labels"]["policy"] == "strict"
    assert "policy" not in build_services(spec, OWNER)[0]["metadata"]["labels"]
    job = build_checkpoint_job(
        spec, OWNER, checkpoint_id="c1", job_name="demo-ckpt-c1", source=pod_view(pod(1), "demo"), term=1
    )
    assert job["metadata"]["labels"]["cost-center"] == "42"
    assert job["metadata"]["labels"][names.LABEL_CHECKPOINT] == "c1"
    assert job["metadata"]["annotations"]["note"] == "nightly"


def test_reserved_and_malformed_keys_are_an_invalid_spec() -> None:
    raw = _spec(
        {"labels": {"ftso.dev/role": "x", "ok": "1"}, "annotations": {"-bad": "x", "a/b/c": "y"}},
        pdb={"labels": {"Example.com/x": "1"}},
    )
    problems = operator_judged_problems(parse_spec(raw))
    assert any("service.metadata.labels key 'ftso.dev/role'" in p and "reserved" in p for p in problems)
    assert any("service.metadata.annotations key '-bad'" in p for p in problems)
    assert any("service.metadata.annotations key 'a/b/c'" in p for p in problems)
    assert any("disruption.metadata.labels key 'Example.com/x'" in p for p in problems)
    assert not any("'ok'" in p for p in problems)
    fine = _spec(
        {"labels": {"app.kubernetes.io/part-of": "shop", "x_y.z": "1"}, "annotations": {"a" * 63: ""}}
    )
    assert operator_judged_problems(parse_spec(fine)) == []


class Cluster:
    """The owned objects as the API server keeps them: an apply sets the fields sent and leaves other
    writers' keys; a merge patch with null values deletes keys."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def reconcile(self, raw: dict[str, Any]) -> None:
        services = {n: o for (k, n), o in self.objects.items() if k == "Service"}
        plan = decide(
            observed(
                _steady_pods(),
                spec=raw,
                status={"primary": "demo-0", "term": 1},
                services=services,
                pdb=self.objects.get(("PodDisruptionBudget", "demo")),
            )
        )
        for body in plan.owned_creates:
            self.objects[(body["kind"], body["metadata"]["name"])] = copy.deepcopy(body)
        for removal in plan.metadata_removals:
            metadata = self.objects[(removal.kind, removal.name)]["metadata"]
            for field, keys in removal.patch["metadata"].items():
                for key in keys:
                    metadata.get(field, {}).pop(key, None)
        for body in plan.applies:
            current = self.objects[(body["kind"], body["metadata"]["name"])]
            for field in ("labels", "annotations"):
                current["metadata"].setdefault(field, {}).update(body["metadata"].get(field) or {})
            current["spec"] = copy.deepcopy(body["spec"])

    def metadata(self, kind: str, name: str) -> dict[str, Any]:
        return self.objects[(kind, name)]["metadata"]


def test_spec_changes_reach_the_objects_and_foreign_keys_stay() -> None:
    cluster = Cluster()
    cluster.reconcile(_spec({"labels": {"team": "a", "tier": "web"}}, pdb={"annotations": {"note": "x"}}))
    assert cluster.metadata("Service", "demo-primary")["labels"]["tier"] == "web"
    assert cluster.metadata("PodDisruptionBudget", "demo")["annotations"]["note"] == "x"

    # Another writer adds its own keys, and changes one of ours.
    primary = cluster.metadata("Service", "demo-primary")
    primary["labels"]["owner-by-policy"] = "kyverno"
    primary["annotations"] = {**primary.get("annotations", {}), "other.example/hash": "abc"}
    primary["labels"]["team"] = "hijacked"

    cluster.reconcile(_spec({"labels": {"team": "b"}, "annotations": {"lb": "internal"}}, pdb={}))
    for name in names.service_names("demo"):
        labels = cluster.metadata("Service", name)["labels"]
        assert labels["team"] == "b", "a changed value reaches every Service"
        assert "tier" not in labels, "a key removed from the spec is removed"
        assert cluster.metadata("Service", name)["annotations"]["lb"] == "internal"
    assert primary["labels"]["owner-by-policy"] == "kyverno", "a foreign label stays"
    assert primary["annotations"]["other.example/hash"] == "abc", "a foreign annotation stays"
    pdb = cluster.metadata("PodDisruptionBudget", "demo")
    assert (
        "note" not in pdb.get("annotations", {}) and names.ANNOTATION_SPEC_METADATA not in pdb["annotations"]
    )

    cluster.reconcile(_spec())
    assert "team" not in primary["labels"] and "lb" not in primary["annotations"]
    assert names.ANNOTATION_SPEC_METADATA not in primary["annotations"]
    assert primary["labels"]["owner-by-policy"] == "kyverno"
    assert primary["labels"][names.LABEL_SERVICE] == "demo", "our own labels are never removed"


def test_in_sync_objects_are_left_alone() -> None:
    cluster = Cluster()
    raw = _spec({"labels": {"team": "a"}}, pdb={"labels": {"p": "1"}})
    cluster.reconcile(raw)
    cluster.metadata("Service", "demo")["labels"]["foreign"] = "1"
    plan = decide(
        observed(
            _steady_pods(),
            spec=raw,
            status={"primary": "demo-0", "term": 1},
            services={n: o for (k, n), o in cluster.objects.items() if k == "Service"},
            pdb=cluster.objects[("PodDisruptionBudget", "demo")],
        )
    )
    assert plan.applies == [] and plan.metadata_removals == [] and plan.owned_creates == []


def test_a_spec_label_our_own_label_overrode_is_never_removed() -> None:
    cluster = Cluster()
    cluster.reconcile(_spec({"labels": {names.LABEL_MANAGED_BY: "helm", "team": "a"}}))
    cluster.reconcile(_spec({"labels": {"team": "a"}}))
    cluster.reconcile(_spec())
    labels = cluster.metadata("Service", "demo")["labels"]
    assert labels[names.LABEL_MANAGED_BY] == names.MANAGED_BY and "team" not in labels
