"""Pure builders of the objects a FaultTolerantService owns: pods, Services, the PodDisruptionBudget."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ftso import names
from ftso.api.spec import NO_METADATA, FtsSpec, ObjectMetadata, ProbeSettings, container_ports
from ftso.model import PodView

ROLE_VOLUME = "ftso-role"
# What a checkpoint Job's pod takes from the service's pod template.
JOB_POD_FIELDS = ("nodeSelector", "tolerations", "imagePullSecrets", "securityContext", "priorityClassName")
CHECKPOINT_VOLUME = "ftso-checkpoints"


@dataclass(frozen=True)
class Owner:
    """The FaultTolerantService that owns what is built."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(
        self, name: str, labels: Mapping[str, str] | None = None, spec_metadata: ObjectMetadata = NO_METADATA
    ) -> dict[str, Any]:
        """Our labels over the spec's (they select and identify what we own), the spec's annotations with
        the record of which keys came from the spec."""
        ours = {names.LABEL_SERVICE: self.name, names.LABEL_MANAGED_BY: names.MANAGED_BY, **(labels or {})}
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": {**spec_metadata.labels, **ours},
            "ownerReferences": [self.reference()],
        }
        if spec_metadata:
            # A key our labels took over is not the spec's: dropping it from the spec must not remove ours.
            given_labels = sorted(k for k in spec_metadata.labels if k not in ours)
            metadata["annotations"] = {
                **spec_metadata.annotations,
                names.ANNOTATION_SPEC_METADATA: spec_metadata_record(
                    given_labels, sorted(spec_metadata.annotations)
                ),
            }
        return metadata


def spec_metadata_record(labels: list[str], annotations: list[str]) -> str:
    return json.dumps({"annotations": annotations, "labels": labels}, separators=(",", ":"))


def recorded_spec_keys(observed: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The label and annotation keys an owned object carries because a spec asked for them."""
    raw = ((observed.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_SPEC_METADATA)
    try:
        record = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        return set(), set()

    def keys(kind: str) -> set[str]:
        value = record.get(kind)
        return {k for k in value if isinstance(k, str)} if isinstance(value, list) else set()

    return keys("labels"), keys("annotations")


def template_hash(spec: FtsSpec) -> str:
    """Changes exactly when the pods the spec asks for change, which is what a rollout follows."""
    material = {
        "template": spec.template,
        "health": [spec.health.readiness, spec.health.liveness, spec.health.startup],
        "spread": [spec.spread.topology_keys, spec.spread.when_unsatisfiable],
    }
    encoded = json.dumps(material, sort_keys=True, default=lambda o: o.__dict__).encode()
    return hashlib.sha256(encoded).hexdigest()[:10]


def _probe(settings: ProbeSettings, port: int) -> dict[str, Any]:
    return {
        "tcpSocket": {"port": port},
        "periodSeconds": settings.period_seconds,
        "timeoutSeconds": settings.timeout_seconds,
        "failureThreshold": settings.failure_threshold,
        "initialDelaySeconds": settings.initial_delay_seconds,
    }


def _with_default_probes(container: dict[str, Any], spec: FtsSpec) -> dict[str, Any]:
    ports = [
        p.get("containerPort") for p in container.get("ports") or [] if p.get("protocol", "TCP") == "TCP"
    ]
    port = next((p for p in ports if isinstance(p, int)), None)
    if port is None:
        return container  # Nothing to probe without a TCP port; the workload's own probes rule.
    container.setdefault("readinessProbe", _probe(spec.health.readiness, port))
    container.setdefault("livenessProbe", _probe(spec.health.liveness, port))
    container.setdefault("startupProbe", _probe(spec.health.startup, port))
    return container


def _spread_constraints(spec: FtsSpec, owner: Owner) -> list[dict[str, Any]]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": spec.spread.when_unsatisfiable,
            "labelSelector": {"matchLabels": {names.LABEL_SERVICE: owner.name}},
        }
        for key in spec.spread.topology_keys
    ]


def _role_volume() -> dict[str, Any]:
    # The workload reads its role and fencing term from files that the kubelet keeps current.
    return {
        "name": ROLE_VOLUME,
        "downwardAPI": {
            "items": [
                {"path": "role", "fieldRef": {"fieldPath": f"metadata.labels['{names.LABEL_ROLE}']"}},
                {
                    "path": "term",
                    "fieldRef": {"fieldPath": f"metadata.annotations['{names.ANNOTATION_TERM}']"},
                },
                {
                    "path": "peers",
                    "fieldRef": {"fieldPath": f"metadata.annotations['{names.ANNOTATION_PEERS}']"},
                },
            ]
        },
    }


def _checkpoint_env(checkpoint_id: str) -> list[dict[str, Any]]:
    return [
        {"name": "FTSO_CHECKPOINT_ID", "value": checkpoint_id},
        {"name": "FTSO_CHECKPOINT_DIR", "value": names.CHECKPOINT_MOUNT},
        {"name": "FTSO_CHECKPOINT_PATH", "value": f"{names.CHECKPOINT_MOUNT}/{checkpoint_id}"},
    ]


def _with_checkpoint_storage(container: Mapping[str, Any], env: list[dict[str, Any]]) -> dict[str, Any]:
    result = copy.deepcopy(dict(container))
    result["env"] = [*env, *(result.get("env") or [])]
    result["volumeMounts"] = [
        *(result.get("volumeMounts") or []),
        {"name": CHECKPOINT_VOLUME, "mountPath": names.CHECKPOINT_MOUNT},
    ]
    return result


def build_checkpoint_job(
    spec: FtsSpec, owner: Owner, *, checkpoint_id: str, job_name: str, source: PodView, term: int
) -> dict[str, Any]:
    """The Job that takes one checkpoint: the user's container, told what to copy and where to write."""
    assert spec.checkpoint is not None
    checkpoint = spec.checkpoint
    named = {name: number for name, number, _ in container_ports(spec.template)}
    targets = [
        p.target_port if isinstance(p.target_port, int) else named.get(p.target_port)
        for p in spec.service.ports
    ]
    port = next((t for t in targets if t is not None), None)
    env = [
        {"name": "FTSO_SERVICE", "value": owner.name},
        {"name": "FTSO_TARGET_POD", "value": source.name},
        {"name": "FTSO_TARGET_IP", "value": source.pod_ip},
        {"name": "FTSO_TARGET_PORT", "value": str(port or "")},
        {"name": "FTSO_TERM", "value": str(term)},
        *_checkpoint_env(checkpoint_id),
    ]
    labels = {names.LABEL_CHECKPOINT: checkpoint_id}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.metadata(job_name, labels, checkpoint.job_metadata),
        "spec": {
            "backoffLimit": checkpoint.retries,
            "activeDeadlineSeconds": checkpoint.timeout_seconds,
            "template": {
                "metadata": {
                    "labels": {**checkpoint.labels, names.LABEL_CHECKPOINT_OF: owner.name, **labels}
                },
                "spec": {
                    # Placed and run like the service's pods: the same nodes, pull secrets and security context.
                    **{
                        key: copy.deepcopy(value)
                        for key, value in (spec.template.get("spec") or {}).items()
                        if key in JOB_POD_FIELDS
                    },
                    "restartPolicy": "Never",
                    "containers": [_with_checkpoint_storage(checkpoint.template, env)],
                    "volumes": [{"name": CHECKPOINT_VOLUME, **checkpoint.storage}],
                },
            },
        },
    }


def _avoid(pod_spec: dict[str, Any], avoid_nodes: tuple[str, ...]) -> None:
    # A replacement must not land back on a node we judged lost but Kubernetes has not tainted yet.
    affinity = pod_spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": [{}]}
    )
    for term_ in required.setdefault("nodeSelectorTerms", [{}]):
        # A node-name field selector takes one value per expression; expressions in a term are ANDed.
        term_.setdefault("matchFields", []).extend(
            {"key": "metadata.name", "operator": "NotIn", "values": [node]} for node in sorted(avoid_nodes)
        )


def build_pod(
    spec: FtsSpec,
    owner: Owner,
    ordinal: int,
    *,
    role: str,
    term: int,
    avoid_nodes: tuple[str, ...] = (),
    restore_from: str = "",
) -> dict[str, Any]:
    template = copy.deepcopy(dict(spec.template))
    template_meta = template.get("metadata") or {}
    pod_spec: dict[str, Any] = template.get("spec") or {}
    name = names.pod_name(owner.name, ordinal)

    pod_spec["containers"] = [_with_default_probes(dict(c), spec) for c in pod_spec.get("containers", [])]
    for container in pod_spec["containers"]:
        mounts = container.setdefault("volumeMounts", [])
        if not any(m.get("name") == ROLE_VOLUME for m in mounts):
            mounts.append({"name": ROLE_VOLUME, "mountPath": names.ROLE_MOUNT_PATH, "readOnly": True})
    volumes = pod_spec.setdefault("volumes", [])
    if not any(v.get("name") == ROLE_VOLUME for v in volumes):
        volumes.append(_role_volume())
    if spec.spread.topology_keys and "topologySpreadConstraints" not in pod_spec:
        pod_spec["topologySpreadConstraints"] = _spread_constraints(spec, owner)
    pod_spec.setdefault("hostname", name)
    if avoid_nodes:
        _avoid(pod_spec, avoid_nodes)

    metadata = owner.metadata(
        name,
        {
            **(template_meta.get("labels") or {}),
            names.LABEL_SERVICE: owner.name,
            names.LABEL_ROLE: role,
            names.LABEL_SERVING: "false",
            names.LABEL_ORDINAL: str(ordinal),
        },
    )
    metadata["annotations"] = {
        **(template_meta.get("annotations") or {}),
        names.ANNOTATION_TERM: str(term),
        names.ANNOTATION_TEMPLATE_HASH: template_hash(spec),
    }
    if restore_from and spec.checkpoint is not None and spec.checkpoint.restore_template is not None:
        # The pod starts only once the user's restore container has loaded the checkpoint.
        env = [*_checkpoint_env(restore_from), {"name": "FTSO_POD", "value": name}]
        restore = _with_checkpoint_storage(spec.checkpoint.restore_template, env)
        # It sees the main container's volumes (where the data goes), unless it mounts them itself.
        taken = {m.get("mountPath") for m in restore["volumeMounts"]}
        restore["volumeMounts"] += [
            m
            for m in pod_spec["containers"][0].get("volumeMounts", [])
            if m.get("name") != ROLE_VOLUME and m.get("mountPath") not in taken
        ]
        pod_spec["initContainers"] = [*(pod_spec.get("initContainers") or []), restore]
        pod_spec["volumes"] = [*pod_spec["volumes"], {"name": CHECKPOINT_VOLUME, **spec.checkpoint.storage}]
        metadata["annotations"][names.ANNOTATION_RESTORED_FROM] = restore_from
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def service_selectors(spec: FtsSpec, owner: Owner) -> dict[str, dict[str, str] | None]:
    """Service name -> selector. Every Service routes only to pods the operator marked serving; the
    primary's has none: the operator writes its EndpointSlice (build_primary_slice)."""
    all_name, primary_name, replicas_name = names.service_names(owner.name)
    serving = {names.LABEL_SERVICE: owner.name, names.LABEL_SERVING: "true"}
    selectors: dict[str, dict[str, str] | None] = {
        all_name: serving,
        replicas_name: {**serving, names.LABEL_ROLE: names.ROLE_REPLICA},
    }
    if spec.primary_replica:
        selectors[primary_name] = None
    return selectors


def service_ports(spec: FtsSpec) -> list[dict[str, Any]]:
    """spec.service.ports as a Service spells them: every Service the operator owns has the same."""
    return [
        {"name": p.name, "port": p.port, "targetPort": p.target_port, "protocol": p.protocol}
        for p in spec.service.ports
    ]


def build_services(spec: FtsSpec, owner: Owner) -> list[dict[str, Any]]:
    if not spec.service.ports:
        return []  # A Service needs a port; a portless workload (a worker) gets none.
    ports = service_ports(spec)
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": owner.metadata(name, spec_metadata=spec.service.metadata),
            "spec": {
                "type": spec.service.type,
                "ports": ports,
                **({"selector": selector} if selector else {}),
                **service_traffic_fields(spec),
            },
        }
        for name, selector in service_selectors(spec, owner).items()
    ]


def service_traffic_fields(spec: FtsSpec) -> dict[str, Any]:
    """spec.traffic's session affinity and traffic distribution, as the Service API spells them."""
    traffic = spec.traffic
    fields: dict[str, Any] = {"sessionAffinity": "ClientIP" if traffic.affinity_seconds else "None"}
    if traffic.affinity_seconds:
        fields["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": traffic.affinity_seconds}}
    if traffic.distribution:
        fields["trafficDistribution"] = traffic.distribution
    return fields


def traffic_fields_removal(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch taking off the affinity and distribution the spec no longer asks for: an apply
    without them would leave them to the create that set them."""
    wanted, present = desired["spec"], observed.get("spec") or {}
    patch: dict[str, Any] = {}
    if "sessionAffinityConfig" not in wanted and present.get("sessionAffinityConfig"):
        patch.update(sessionAffinity="None", sessionAffinityConfig=None)
    if "trafficDistribution" not in wanted and present.get("trafficDistribution"):
        patch["trafficDistribution"] = None
    return {"spec": patch} if patch else {}


@dataclass(frozen=True)
class Endpoint:
    """The pod <name>-primary routes to."""

    pod: str
    uid: str
    ip: str
    node: str


def build_primary_slice(
    spec: FtsSpec,
    owner: Owner,
    endpoint: Endpoint | None,
    address_type: str,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """<name>-primary's only EndpointSlice: the primary, once it serves, else no endpoint. Ports carry the
    container's port numbers, named target ports resolved from the template, as the controller manager does;
    given `ports` (the slice's own, while the spec is not acted on) are kept as they are."""
    primary_name = names.service_names(owner.name)[1]
    named = {name: number for name, number, _ in container_ports(spec.template)}
    if ports is None:
        ports = [
            {
                "name": p.name,
                "port": named.get(str(p.target_port), 0) if isinstance(p.target_port, str) else p.target_port,
                "protocol": p.protocol,
            }
            for p in spec.service.ports
        ]
    labels = {names.LABEL_SLICE_SERVICE: primary_name, names.LABEL_SLICE_MANAGED_BY: names.SLICE_MANAGER}
    endpoints = []
    if endpoint is not None:
        target = {"kind": "Pod", "namespace": owner.namespace, "name": endpoint.pod, "uid": endpoint.uid}
        endpoints.append(
            {
                "addresses": [endpoint.ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "targetRef": target,
                **({"nodeName": endpoint.node} if endpoint.node else {}),
            }
        )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": owner.metadata(primary_name, labels),
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [p for p in ports if p["port"]],
    }


def slice_drifted(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> bool:
    """On what routes: the address type, the ports, and each endpoint's address, pod and readiness."""

    def essence(body: Mapping[str, Any]) -> tuple[Any, ...]:
        endpoints = [
            (
                tuple(e.get("addresses") or ()),
                bool((e.get("conditions") or {}).get("ready")),
                (e.get("targetRef") or {}).get("name"),
                (e.get("targetRef") or {}).get("uid"),
            )
            for e in body.get("endpoints") or []
        ]
        ports = [(p.get("name"), p.get("port"), p.get("protocol")) for p in body.get("ports") or []]
        return body.get("addressType"), endpoints, ports

    return _metadata_drifted(desired, observed) or essence(desired) != essence(observed)


def build_pdb(spec: FtsSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": owner.metadata(owner.name, spec_metadata=spec.disruption_metadata),
        "spec": {
            "maxUnavailable": spec.max_unavailable,
            "selector": {"matchLabels": {names.LABEL_SERVICE: owner.name}},
        },
    }


@dataclass(frozen=True)
class StaleMetadata:
    """Keys a spec once put on an owned object and no longer asks for."""

    labels: tuple[str, ...] = ()
    annotations: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.labels or self.annotations)

    def merge_patch(self) -> dict[str, Any]:
        # null deletes a key in a merge patch, whoever owns it; only keys our record names get here.
        return {
            "metadata": {
                "labels": dict.fromkeys(self.labels),
                "annotations": dict.fromkeys(self.annotations),
            }
        }


def stale_metadata(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> StaleMetadata:
    """What to remove from `observed`: keys the spec asked for before (the record) but no longer does, and
    the record itself once the spec asks for nothing. Keys anyone else added are never touched."""
    recorded_labels, recorded_annotations = recorded_spec_keys(observed)
    wanted = desired["metadata"]
    wanted_labels, wanted_annotations = wanted.get("labels") or {}, wanted.get("annotations") or {}
    present = observed.get("metadata") or {}
    present_labels, present_annotations = present.get("labels") or {}, present.get("annotations") or {}
    gone_annotations = recorded_annotations - set(wanted_annotations)
    if names.ANNOTATION_SPEC_METADATA not in wanted_annotations:
        gone_annotations.add(names.ANNOTATION_SPEC_METADATA)
    return StaleMetadata(
        labels=tuple(sorted(k for k in recorded_labels - set(wanted_labels) if k in present_labels)),
        annotations=tuple(sorted(k for k in gone_annotations if k in present_annotations)),
    )


def _metadata_drifted(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> bool:
    observed_metadata = observed.get("metadata") or {}
    for field_ in ("labels", "annotations"):
        wanted = desired["metadata"].get(field_) or {}
        present = observed_metadata.get(field_) or {}
        if any(present.get(k) != v for k, v in wanted.items()):
            return True
    return False


def drifted(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    """Whether an owned object differs from what we would apply, on the fields we own. Keys other writers
    added to labels and annotations are theirs: they never count."""
    if observed is None:
        return True
    if _metadata_drifted(desired, observed):
        return True
    observed_spec = observed.get("spec") or {}
    if "selector" not in desired["spec"] and observed_spec.get("selector"):
        return True  # <name>-primary from before the operator wrote its EndpointSlice
    for key, value in desired["spec"].items():
        if key == "ports":
            mine = [
                {k: p.get(k) for k in ("name", "port", "targetPort", "protocol")}
                for p in observed_spec.get(key) or []
            ]
            if mine != value:
                return True
        elif observed_spec.get(key) != value:
            return True
    return False
