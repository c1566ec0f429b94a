"""spec.traffic, decided: each pod's weight, the objects that carry the policy (per-pod Services, the
HTTPRoute <name>, a provider's load-balancer object) and whether the policy is in force. Pure: the
controller reads what exists (`TrafficView`) and carries out what this module asks for."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ftso import kinds, names
from ftso.api.spec import LOAD_DEADBAND_PERCENT, MAX_WEIGHT, FollowLoad, FtsSpec, TrafficSpec
from ftso.builders import Owner, service_ports
from ftso.conditions import Condition
from ftso.model import PodView
from ftso.names import ConditionType, Reason
from ftso.usage import PodUsage

# A slow start raises a pod's weight in this many steps: each one is a route write, not one a second.
SLOW_START_STEPS = 10


@dataclass(frozen=True)
class TrafficView:
    """What the API holds of spec.traffic's objects, read by the controller: they are not watched, since
    their CRDs may be missing or installed later."""

    served: frozenset[str] = frozenset()  # kinds whose CRDs are installed (kinds.TRAFFIC)
    gateway_found: bool = False
    route: Mapping[str, Any] | None = None  # the HTTPRoute <name>, when it exists
    policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # kind -> ours of that kind
    problem: str = ""  # why the lookup failed, when it did: nothing is written on it
    foreign: frozenset[str] = frozenset()  # kinds with an object of our name that we did not create
    pending: bool = False  # not read yet: the condition stays what it was
    stale: str = ""  # why the newest read failed; this view is the last good one, and writes go on from it


def provider_of(spec: TrafficSpec, served: Iterable[str]) -> str:
    """The implementation whose object carries the algorithm: the one named, else the first installed."""
    if spec.provider != names.PROVIDER_AUTO:
        return spec.provider
    installed = set(served)
    return next(
        (name for name, kind in kinds.PROVIDER_POLICY.items() if kind.kind in installed), names.PROVIDER_NONE
    )


# Weights


@dataclass(frozen=True)
class Weights:
    by_pod: Mapping[str, int]
    next_step: datetime | None = None  # when a slow start next raises a weight
    sampled_at: Mapping[str, datetime] = field(default_factory=dict)  # the sample each load weight came from


@dataclass(frozen=True)
class LoadState:
    """What load-following weights start from: the last weights (status), the samples they came from, and
    the newest samples."""

    previous: Mapping[str, int] = field(default_factory=dict)
    sampled_at: Mapping[str, datetime] = field(default_factory=dict)
    usage: Mapping[str, PodUsage] = field(default_factory=dict)


# A sample older than this moves no weight.
LOAD_SAMPLE_STALE_SECONDS = 60


def _follow_load(
    follow: FollowLoad, full: int, pod: PodView, state: LoadState, now: datetime
) -> tuple[int, datetime | None]:
    """Toward full x (1 - cpu / capacity), never under the floor, at most one step per new sample, and not
    at all for a change inside the deadband; without a fresh sample the weight stays where it was."""
    previous = state.previous.get(pod.name) or full
    sample = state.usage.get(pod.name)
    born = pod.started_at or pod.created_at
    if sample is None or (now - sample.at).total_seconds() > LOAD_SAMPLE_STALE_SECONDS:
        return previous, state.sampled_at.get(pod.name)
    if (born is not None and sample.at <= born) or state.sampled_at.get(pod.name) == sample.at:
        return previous, state.sampled_at.get(pod.name)
    share = max(follow.floor_percent / 100, 1 - sample.cpu / follow.cpu_capacity)
    target = round(full * share)
    if abs(target - previous) <= full * LOAD_DEADBAND_PERCENT / 100:
        return previous, sample.at
    step = max(1, round(full * follow.max_step_percent / 100))
    return previous + max(-step, min(step, target - previous)), sample.at


def _full_weight(spec: TrafficSpec, pod: PodView, role: str) -> int:
    given = pod.annotations.get(names.ANNOTATION_WEIGHT, "")
    if given.isdigit() and int(given) <= MAX_WEIGHT:
        return int(given)
    return spec.primary_weight if role == names.ROLE_PRIMARY else spec.replica_weight


def _ramp(full: int, healthy_for: float, slow_start: int) -> tuple[int, float | None]:
    """The weight after `healthy_for` seconds of a slow start, and the seconds until its next step."""
    if slow_start <= 0 or healthy_for >= slow_start or full == 0:
        return full, None
    step_seconds = slow_start / SLOW_START_STEPS
    steps = min(SLOW_START_STEPS, int(healthy_for // step_seconds) + 1)  # the first step at once
    return max(1, math.ceil(full * steps / SLOW_START_STEPS)), steps * step_seconds - healthy_for


def pod_weights(
    spec: TrafficSpec,
    pods: Sequence[PodView],
    roles: Mapping[str, str],
    serving: Mapping[str, bool],
    healthy_since: Mapping[str, datetime],
    now: datetime,
    load: LoadState = LoadState(),
) -> Weights:
    """Each pod's share under policy Weighted: its role's weight (or its own annotation), following its
    measured load when asked to, ramped up over the slow start since it turned Healthy, and 0 while it does
    not serve (drained: Degraded, failed, fenced, terminating), so the Gateway stops sending it new requests
    before it is replaced."""
    weights: dict[str, int] = {}
    sampled: dict[str, datetime] = {}
    waits: list[float] = []
    for pod in pods:
        if pod.deleting or not serving.get(pod.name):
            weights[pod.name] = 0
            continue
        full = _full_weight(spec, pod, roles.get(pod.name, ""))
        if spec.follow_load is not None and full:
            full, at = _follow_load(spec.follow_load, full, pod, load, now)
            if at is not None:
                sampled[pod.name] = at
        since = healthy_since.get(pod.name, now)
        weight, wait = _ramp(full, (now - since).total_seconds(), spec.slow_start_seconds)
        weights[pod.name] = weight
        if wait is not None:
            waits.append(wait)
    return Weights(weights, now + timedelta(seconds=min(waits)) if waits else None, sampled)


# The objects


def service_port(spec: FtsSpec) -> int:
    """The port the route sends to: the Services' first."""
    return spec.service.ports[0].port


def pod_service_ordinals(spec: FtsSpec, pods: Iterable[PodView]) -> list[int]:
    """Each pod in range has a Service of its own, and so does one that scale-down has not removed yet."""
    return sorted(set(range(spec.replicas)) | {p.ordinal for p in pods if p.ordinal >= 0 and not p.deleting})


def build_pod_services(spec: FtsSpec, owner: Owner, ordinals: Iterable[int]) -> list[dict[str, Any]]:
    """One Service per pod, named after it, for the route's per-pod weights. It selects the pod whether or
    not it serves: a pod being drained keeps its endpoint while its weight is 0."""
    ports = service_ports(spec)
    services = []
    for ordinal in ordinals:
        labels: dict[str, str] = {names.LABEL_ORDINAL: str(ordinal)}
        services.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": owner.metadata(names.pod_name(owner.name, ordinal), labels),
                "spec": {
                    "type": "ClusterIP",
                    "ports": ports,
                    "selector": {names.LABEL_SERVICE: owner.name, names.LABEL_ORDINAL: str(ordinal)},
                },
            }
        )
    return services


def _parent_ref(spec: TrafficSpec) -> dict[str, Any]:
    gateway = spec.gateway
    assert gateway is not None
    ref: dict[str, Any] = {"group": names.GATEWAY_GROUP, "kind": kinds.GATEWAY.kind, "name": gateway.name}
    if gateway.namespace:
        ref["namespace"] = gateway.namespace
    if gateway.section_name:
        ref["sectionName"] = gateway.section_name
    return ref


def _backend(name: str, port: int, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": name, "port": port, "weight": weight}


def build_route(spec: FtsSpec, owner: Owner, weights: Mapping[str, int] | None) -> dict[str, Any]:
    """The HTTPRoute <name>: every path to the pods' weighted Services (policy Weighted, `weights` by pod
    Service), else to the Service <name>, where the provider's object picks the algorithm."""
    port = service_port(spec)
    if weights is None:
        backends = [_backend(owner.name, port, 1)]
    else:
        backends = [_backend(name, port, weight) for name, weight in weights.items()]
    return {
        "apiVersion": f"{names.GATEWAY_GROUP}/v1",
        "kind": kinds.HTTP_ROUTE.kind,
        "metadata": owner.metadata(owner.name),
        "spec": {
            "parentRefs": [_parent_ref(spec.traffic)],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backends}],
        },
    }


_ENVOY_TYPES = {names.POLICY_RANDOM: "Random", names.POLICY_ROUND_ROBIN: "RoundRobin"}
_ISTIO_TYPES = {names.POLICY_RANDOM: "RANDOM", names.POLICY_ROUND_ROBIN: "ROUND_ROBIN"}


def build_provider_policy(spec: FtsSpec, owner: Owner, provider: str) -> dict[str, Any] | None:
    """The provider's own object for Random and RoundRobin (Gateway API has no field for the algorithm);
    none for Weighted, which the route's weights carry everywhere."""
    policy = spec.traffic.policy
    if policy == names.POLICY_WEIGHTED:
        return None
    if provider == names.PROVIDER_ENVOY_GATEWAY:
        kind = kinds.BACKEND_TRAFFIC_POLICY
        body: dict[str, Any] = {
            "targetRefs": [{"group": names.GATEWAY_GROUP, "kind": kinds.HTTP_ROUTE.kind, "name": owner.name}],
            "loadBalancer": {"type": _ENVOY_TYPES[policy]},
        }
    elif provider == names.PROVIDER_ISTIO:
        kind = kinds.DESTINATION_RULE
        body = {
            "host": f"{owner.name}.{owner.namespace}.svc.cluster.local",
            "trafficPolicy": {"loadBalancer": {"simple": _ISTIO_TYPES[policy]}},
        }
    else:
        return None
    return {
        "apiVersion": f"{kind.group}/{kind.version}",
        "kind": kind.kind,
        "metadata": owner.metadata(owner.name),
        "spec": body,
    }


def covers(observed: Any, desired: Any) -> bool:
    """Whether `observed` holds everything `desired` says; what the server or others added does not count."""
    if isinstance(desired, Mapping):
        return isinstance(observed, Mapping) and all(covers(observed.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(observed) == len(desired)
            and all(covers(o, d) for o, d in zip(observed, desired, strict=True))
        )
    return bool(observed == desired)


def _essence(body: Mapping[str, Any]) -> dict[str, Any]:
    metadata = body.get("metadata") or {}
    return {"metadata": {"labels": metadata.get("labels") or {}}, "spec": body.get("spec") or {}}


def changed(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    return observed is None or not covers(_essence(observed), _essence(desired))


# In force or not


def route_acceptance(route: Mapping[str, Any], spec: TrafficSpec, namespace: str) -> tuple[bool, str, str]:
    """What the Gateway's controller says of the route in status.parents (only it writes there)."""
    gateway = spec.gateway
    assert gateway is not None
    for parent in (route.get("status") or {}).get("parents") or []:
        ref = parent.get("parentRef") or {}
        if ref.get("name") != gateway.name or (ref.get("namespace") or namespace) != (
            gateway.namespace or namespace
        ):
            continue
        if gateway.section_name and ref.get("sectionName") not in (None, gateway.section_name):
            continue
        by_type = {c.get("type"): c for c in parent.get("conditions") or []}
        accepted, resolved = by_type.get("Accepted") or {}, by_type.get("ResolvedRefs") or {}
        controller = parent.get("controllerName") or "the Gateway's controller"
        if accepted.get("status") == "True" and resolved.get("status") != "False":
            return True, Reason.ROUTE_ACCEPTED, f"accepted by {controller}"
        refused = accepted if accepted.get("status") != "True" else resolved
        return (
            False,
            Reason.ROUTE_NOT_ACCEPTED,
            f"{controller}: {refused.get('reason')}: {refused.get('message')}",
        )
    return False, Reason.ROUTE_PENDING, "no Gateway controller has accepted the route yet"


KUBE_PROXY_MESSAGE = (
    "policy Random on the plain Services: kube-proxy picks an endpoint at random in iptables and nftables "
    "mode (round robin in IPVS mode)"
)


def traffic_condition(
    spec: TrafficSpec,
    view: TrafficView | None,
    namespace: str,
    previous: Iterable[Mapping[str, Any]] = (),
) -> Condition:
    """TrafficPolicyReady: True once the route is accepted and the algorithm has its object. When False,
    the plain Services still route as they always do. Before the first read it stays as it was
    (`previous`: the status's conditions): a restarted operator has nothing new to say yet."""
    ready = ConditionType.TRAFFIC_POLICY_READY
    if view is not None and view.pending:
        return _unchanged(previous) or Condition(ready, False, Reason.TRAFFIC_LOOKUP_PENDING, LOOKUP_MESSAGE)
    if not spec.routed:
        return Condition(ready, True, Reason.KUBE_PROXY, KUBE_PROXY_MESSAGE)
    fallback = "; the plain Services still route"
    if view is None or view.problem:
        problem = view.problem if view is not None else "not looked up yet"
        return Condition(ready, False, Reason.TRAFFIC_API_ERROR, problem + fallback)
    if view.stale:
        message = f"reading the route and its objects failed: {view.stale}; written from the last good read"
        return Condition(ready, False, Reason.TRAFFIC_API_ERROR, message)
    if kinds.HTTP_ROUTE.kind not in view.served:
        return Condition(
            ready, False, Reason.GATEWAY_API_MISSING, "the Gateway API CRDs are not installed" + fallback
        )
    if view.foreign:
        taken = ", ".join(sorted(view.foreign))
        message = f"a {taken} of this name exists that ftso did not create: it is left alone" + fallback
        return Condition(ready, False, Reason.NAME_TAKEN, message)
    if not view.gateway_found:
        gateway = spec.gateway
        assert gateway is not None
        where = f"{gateway.namespace or namespace}/{gateway.name}"
        return Condition(ready, False, Reason.GATEWAY_NOT_FOUND, f"no Gateway {where}" + fallback)
    if missing := _missing_provider(spec, view):
        return Condition(ready, False, Reason.PROVIDER_MISSING, missing)
    if view.route is None:
        return Condition(ready, False, Reason.ROUTE_PENDING, "the HTTPRoute is being written")
    accepted, reason, message = route_acceptance(view.route, spec, namespace)
    return Condition(ready, accepted, reason, message)


LOOKUP_MESSAGE = "the route and its objects are being read"


def _unchanged(previous: Iterable[Mapping[str, Any]]) -> Condition | None:
    ready = ConditionType.TRAFFIC_POLICY_READY
    before = next((c for c in previous if c.get("type") == ready), None)
    if before is None:
        return None
    return Condition(
        ready, before.get("status") == "True", str(before.get("reason")), str(before.get("message"))
    )


def _missing_provider(spec: TrafficSpec, view: TrafficView) -> str:
    if spec.policy == names.POLICY_WEIGHTED:
        return ""
    provider = provider_of(spec, view.served)
    kind = kinds.PROVIDER_POLICY.get(provider)
    if kind is None:
        return (
            f"policy {spec.policy} needs a Gateway implementation's own object (Envoy Gateway's "
            "BackendTrafficPolicy or Istio's DestinationRule) and none is installed: the route uses the "
            "implementation's default balancing"
        )
    if kind.kind not in view.served:
        return f"provider {provider}: the {kind.kind} CRD ({kind.group}) is not installed"
    return ""
