"""The pure builders: pods, Services and the PodDisruptionBudget, each checked field by field."""

from __future__ import annotations

import json

from ftso import names
from ftso.api.spec import parse_spec
from ftso.builders import (
    ROLE_VOLUME,
    Endpoint,
    Owner,
    build_pdb,
    build_pod,
    build_primary_slice,
    build_services,
    drifted,
    slice_drifted,
    template_hash,
)

from .factories import raw_spec

OWNER = Owner("demo", "ns", "uid-1")


def test_pod_name_labels_annotations_and_owner() -> None:
    pod = build_pod(parse_spec(raw_spec()), OWNER, 2, role=names.ROLE_REPLICA, term=4)
    meta = pod["metadata"]
    assert meta["name"] == "demo-2"
    assert meta["labels"][names.LABEL_SERVICE] == "demo"
    assert meta["labels"][names.LABEL_ROLE] == "replica"
    assert meta["labels"][names.LABEL_SERVING] == "false"
    assert meta["labels"]["app"] == "demo"
    assert meta["annotations"][names.ANNOTATION_TERM] == "4"
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["ownerReferences"][0]["controller"] is True


def test_default_probes_only_where_missing() -> None:
    spec = raw_spec()
    spec["template"]["spec"]["containers"].append(
        {
            "name": "side",
            "image": "side:1",
            "ports": [{"containerPort": 9000}],
            "readinessProbe": {"exec": {"command": ["true"]}},
        }
    )
    app, side = build_pod(parse_spec(spec), OWNER, 0, role="replica", term=1)["spec"]["containers"]
    assert app["readinessProbe"]["tcpSocket"] == {"port": 8080}
    assert app["livenessProbe"]["periodSeconds"] == 10
    assert app["startupProbe"]["failureThreshold"] == 30
    assert side["readinessProbe"] == {"exec": {"command": ["true"]}}
    assert side["livenessProbe"]["tcpSocket"] == {"port": 9000}


def test_no_probes_without_a_port() -> None:
    spec = raw_spec()
    del spec["template"]["spec"]["containers"][0]["ports"]
    container = build_pod(parse_spec(spec), OWNER, 0, role="replica", term=1)["spec"]["containers"][0]
    assert "readinessProbe" not in container


def test_spread_and_role_volume() -> None:
    pod_spec = build_pod(parse_spec(raw_spec()), OWNER, 0, role="replica", term=1)["spec"]
    keys = [c["topologyKey"] for c in pod_spec["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    assert any(v["name"] == ROLE_VOLUME for v in pod_spec["volumes"])
    assert pod_spec["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/ftso"


def test_avoided_nodes_become_node_affinity() -> None:
    pod_spec = build_pod(parse_spec(raw_spec()), OWNER, 0, role="replica", term=1, avoid_nodes=("n2", "n1"))[
        "spec"
    ]
    terms = pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchFields"] == [
        {"key": "metadata.name", "operator": "NotIn", "values": ["n1"]},
        {"key": "metadata.name", "operator": "NotIn", "values": ["n2"]},
    ]


def test_template_hash_follows_the_template_only() -> None:
    base = parse_spec(raw_spec())
    assert template_hash(base) == template_hash(parse_spec(raw_spec(replicas=7)))
    changed = raw_spec()
    changed["template"]["spec"]["containers"][0]["image"] = "demo:2"
    assert template_hash(base) != template_hash(parse_spec(changed))


def test_services_follow_roles() -> None:
    services = {s["metadata"]["name"]: s for s in build_services(parse_spec(raw_spec()), OWNER)}
    assert services["demo"]["spec"]["selector"] == {names.LABEL_SERVICE: "demo", names.LABEL_SERVING: "true"}
    assert "selector" not in services["demo-primary"]["spec"]  # the operator writes its EndpointSlice
    assert services["demo-replicas"]["spec"]["selector"][names.LABEL_ROLE] == "replica"
    assert services["demo"]["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}
    ]


def test_the_primary_slice_routes_to_the_primary_on_its_container_port() -> None:
    spec = parse_spec(raw_spec(service={"ports": [{"name": "web", "port": 80, "targetPort": "http"}]}))
    endpoint = Endpoint("demo-1", "uid-1", "10.0.0.7", "node-1")
    eps = build_primary_slice(spec, OWNER, endpoint, "IPv4")
    assert eps["metadata"]["name"] == "demo-primary"
    assert eps["metadata"]["labels"][names.LABEL_SLICE_SERVICE] == "demo-primary"
    assert eps["metadata"]["labels"][names.LABEL_SLICE_MANAGED_BY] == names.SLICE_MANAGER
    assert eps["metadata"]["labels"][names.LABEL_SERVICE] == "demo"  # so the store files it under its owner
    assert eps["ports"] == [
        {"name": "web", "port": 8080, "protocol": "TCP"}
    ]  # "http" is 8080 in the template
    assert eps["endpoints"] == [
        {
            "addresses": ["10.0.0.7"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "targetRef": {"kind": "Pod", "namespace": "ns", "name": "demo-1", "uid": "uid-1"},
            "nodeName": "node-1",
        }
    ]
    assert build_primary_slice(spec, OWNER, None, "IPv4")["endpoints"] == []


def test_a_slice_drifts_on_what_routes_not_on_what_the_server_adds() -> None:
    spec = parse_spec(raw_spec())
    desired = build_primary_slice(spec, OWNER, Endpoint("demo-0", "u0", "10.0.0.1", ""), "IPv4")
    served = json.loads(json.dumps(desired))
    served["metadata"]["resourceVersion"] = "7"
    served["endpoints"][0]["zone"] = "a"
    assert not slice_drifted(desired, served)
    moved = build_primary_slice(spec, OWNER, Endpoint("demo-1", "u1", "10.0.0.2", ""), "IPv4")
    assert slice_drifted(moved, served)
    assert slice_drifted(build_primary_slice(spec, OWNER, None, "IPv4"), served)


def test_a_primary_service_that_still_has_a_selector_has_drifted() -> None:
    desired = next(
        s for s in build_services(parse_spec(raw_spec()), OWNER) if s["metadata"]["name"] == "demo-primary"
    )
    old = json.loads(json.dumps(desired))
    old["spec"]["selector"] = {names.LABEL_SERVICE: "demo", names.LABEL_ROLE: "primary"}
    assert drifted(desired, old)
    assert not drifted(desired, json.loads(json.dumps(desired)))


def test_active_active_has_no_primary_service() -> None:
    services = build_services(parse_spec(raw_spec(mode="ActiveActive")), OWNER)
    assert sorted(s["metadata"]["name"] for s in services) == ["demo", "demo-replicas"]


def test_explicit_service_ports_and_type() -> None:
    spec = raw_spec(
        service={"type": "NodePort", "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
    )
    service = build_services(parse_spec(spec), OWNER)[0]
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_pdb() -> None:
    pdb = build_pdb(parse_spec(raw_spec(disruption={"maxUnavailable": "50%"})), OWNER)
    assert pdb["spec"] == {
        "maxUnavailable": "50%",
        "selector": {"matchLabels": {names.LABEL_SERVICE: "demo"}},
    }


def test_drift_detection() -> None:
    desired = build_services(parse_spec(raw_spec()), OWNER)[0]
    observed = {
        "metadata": {**desired["metadata"], "resourceVersion": "5"},
        "spec": {
            **desired["spec"],
            "clusterIP": "10.0.0.1",
            "ports": [{**desired["spec"]["ports"][0], "nodePort": None}],
        },
    }
    assert not drifted(desired, observed)
    observed["spec"]["selector"] = {"other": "x"}
    assert drifted(desired, observed)
    assert drifted(desired, None)
