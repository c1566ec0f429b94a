"""The typed view of a FaultTolerantService spec, with the defaults the CRD schema also declares.

Parsing never raises on shapes the API server already validated; what only the operator can judge
is reported by `operator_judged_problems` so the controller can set `InvalidSpec` instead of acting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ftso import names

DEFAULT_REPLICAS = 3
DEFAULT_MODE = names.MODE_PRIMARY_REPLICA
MODES = (names.MODE_PRIMARY_REPLICA, names.MODE_ACTIVE_ACTIVE)
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
DEFAULT_SERVICE_TYPE = "ClusterIP"
DEFAULT_MAX_UNAVAILABLE: int | str = 1
DEFAULT_TOPOLOGY_KEYS = ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
WHEN_UNSATISFIABLE = ("ScheduleAnyway", "DoNotSchedule")
DEFAULT_WHEN_UNSATISFIABLE = "ScheduleAnyway"
# A pod may stay unready this long before it counts as failed and is replaced: long enough to ride out
# a slow start or a short freeze, short enough that a stuck pod does not linger.
DEFAULT_UNREADY_TIMEOUT_SECONDS = 30
# The primary may be unready this long before it is failed over: a probe has already failed
# failureThreshold times before Kubernetes marks it unready, so a short extra wait rides out a GC pause or
# a brief overload without making a real failure wait much longer.
DEFAULT_FAILOVER_DELAY_SECONDS = 5
# A node whose heartbeat Lease is this old is lost. Kubelets renew every 10 s, so two missed renewals; well
# under Kubernetes' own 50 s node-monitor grace period.
DEFAULT_NODE_LOST_AFTER_SECONDS = 20
MIN_NODE_LOST_AFTER_SECONDS = 11
DEFAULT_FAILOVER_MAX_PER_HOUR = 12
DEFAULT_FAILOVER_MIN_INTERVAL_SECONDS = 10
FAILOVER_HISTORY_LIMIT = 10
MAX_NAME_LENGTH = 52  # "<name>-replicas" and "<name>-<ordinal>" must stay valid DNS labels (63).

# Upper bounds of every count and duration, in the CRD and again when parsing: a value the schema let
# through must never overflow a clock (datetime ends in year 9999) or a loop in decide().
MAX_REPLICAS = 1000
MAX_PROBE_SECONDS = 3600
MAX_FAILURE_THRESHOLD = 1000
MAX_UNREADY_TIMEOUT_SECONDS = 86400
MAX_FAILOVER_DELAY_SECONDS = 3600
MAX_NODE_LOST_AFTER_SECONDS = 3600
MAX_FAILOVERS_PER_HOUR = 3600
MAX_FAILOVER_MIN_INTERVAL_SECONDS = 86400
MAX_CHECKPOINT_INTERVAL_SECONDS = 366 * 86400
MAX_CHECKPOINT_TIMEOUT_SECONDS = 7 * 86400
MAX_CHECKPOINT_RETRIES = 10
MAX_CHECKPOINT_AGE_SECONDS = 10 * 366 * 86400
# Labels and annotations a spec may put on one owned object: far above real use, small enough that the
# object stays well under the API server's 256 KiB limit on annotations.
MAX_METADATA_ENTRIES = 32
MAX_LABEL_VALUE_LENGTH = 63
MAX_ANNOTATION_VALUE_LENGTH = 4096
LABEL_VALUE_PATTERN = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A qualified name, as Kubernetes checks label and annotation keys: an optional DNS subdomain prefix and "/",
# then a name of at most 63 characters.
_KEY_NAME = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY_PREFIX = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
METADATA_KEY = re.compile(f"^({_KEY_PREFIX}/)?{_KEY_NAME}$")
MAX_KEY_PREFIX_LENGTH = 253


@dataclass(frozen=True)
class ProbeSettings:
    period_seconds: int
    timeout_seconds: int
    failure_threshold: int
    initial_delay_seconds: int = 0


DEFAULT_READINESS = ProbeSettings(period_seconds=5, timeout_seconds=1, failure_threshold=3)
DEFAULT_LIVENESS = ProbeSettings(period_seconds=10, timeout_seconds=1, failure_threshold=3)
DEFAULT_STARTUP = ProbeSettings(period_seconds=2, timeout_seconds=1, failure_threshold=30)


# A quantity as Kubernetes writes CPU and memory: a decimal number and an optional suffix.
QUANTITY_PATTERN = "^[0-9]+(\\.[0-9]+)?(n|u|m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
_SUFFIXES = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50,
}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(n|u|m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")


def parse_quantity(text: str) -> float | None:
    """CPU in cores or memory in bytes from a quantity ("250m", "1.5", "512Mi"), None if it is not one."""
    match = _QUANTITY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    return float(match.group(1)) * _SUFFIXES[match.group(2) or ""]


DEFAULT_BREACH_SECONDS = 30
DEFAULT_REPLACE_AFTER_SECONDS = 120
DEFAULT_STALE_AFTER_SECONDS = 60
RECOVER_SHARE = 0.9  # recoverBelow's default: 90% of the threshold
MAX_BREACH_SECONDS = 86400


@dataclass(frozen=True)
class Threshold:
    above: float  # cores or bytes, summed over the pod's containers
    recover_below: float  # a pod in breach is out of it only below this (hysteresis)


@dataclass(frozen=True)
class MetricsHealthSpec:
    """Health from measured usage (metrics.k8s.io): a pod over a threshold for `for_seconds` is Degraded
    (drained), and replaced once it stays so `replace_after_seconds` longer (0: never)."""

    cpu: Threshold | None = None
    memory: Threshold | None = None
    for_seconds: int = DEFAULT_BREACH_SECONDS
    replace_after_seconds: int = DEFAULT_REPLACE_AFTER_SECONDS
    stale_after_seconds: int = DEFAULT_STALE_AFTER_SECONDS


@dataclass(frozen=True)
class HealthSpec:
    readiness: ProbeSettings = DEFAULT_READINESS
    liveness: ProbeSettings = DEFAULT_LIVENESS
    startup: ProbeSettings = DEFAULT_STARTUP
    unready_timeout_seconds: int = DEFAULT_UNREADY_TIMEOUT_SECONDS
    metrics: MetricsHealthSpec | None = None


@dataclass(frozen=True)
class ObjectMetadata:
    """Labels and annotations the spec asks for on an object the operator owns."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.labels or self.annotations)


NO_METADATA = ObjectMetadata()


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str
    protocol: str = "TCP"


@dataclass(frozen=True)
class ServiceSpec:
    type: str = DEFAULT_SERVICE_TYPE
    ports: tuple[ServicePort, ...] = ()
    metadata: ObjectMetadata = NO_METADATA


@dataclass(frozen=True)
class SpreadSpec:
    topology_keys: tuple[str, ...] = DEFAULT_TOPOLOGY_KEYS
    when_unsatisfiable: str = DEFAULT_WHEN_UNSATISFIABLE


# A hook path: "/" then printable ASCII without spaces, never "//" (a host to a URL parser): never a URL,
# a host or user info.
HOOK_PATH_PATTERN = "^/([!-.0-~][!-~]*)?$"


@dataclass(frozen=True)
class HooksSpec:
    port: int
    promote_path: str = "/promote"
    demote_path: str = "/demote"
    timeout_seconds: float = 1.0


@dataclass(frozen=True)
class FailoverSpec:
    hooks: HooksSpec | None = None
    delay_seconds: int = DEFAULT_FAILOVER_DELAY_SECONDS
    node_lost_after_seconds: int = DEFAULT_NODE_LOST_AFTER_SECONDS
    max_per_hour: int = DEFAULT_FAILOVER_MAX_PER_HOUR
    min_interval_seconds: int = DEFAULT_FAILOVER_MIN_INTERVAL_SECONDS


CHECKPOINT_SOURCES = ("Replica", "Primary")
DEFAULT_CHECKPOINT_TIMEOUT_SECONDS = 600
DEFAULT_CHECKPOINT_RETRIES = 2
DEFAULT_CHECKPOINT_KEEP_LAST = 5
CHECKPOINT_HISTORY_LIMIT = 20


@dataclass(frozen=True)
class CheckpointSpec:
    template: Mapping[str, Any]  # the container the checkpoint Job runs
    storage: Mapping[str, Any]  # a volume source, mounted at /checkpoints in Jobs and restore containers
    schedule: str = ""  # cron, five fields
    interval_seconds: int = 0
    source: str = "Replica"
    timeout_seconds: int = DEFAULT_CHECKPOINT_TIMEOUT_SECONDS
    retries: int = DEFAULT_CHECKPOINT_RETRIES
    keep_last: int = DEFAULT_CHECKPOINT_KEEP_LAST
    max_age_seconds: int = 0
    suspend: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    restore_template: Mapping[str, Any] | None = None
    job_metadata: ObjectMetadata = NO_METADATA


TRAFFIC_POLICIES = (names.POLICY_RANDOM, names.POLICY_ROUND_ROBIN, names.POLICY_WEIGHTED)
TRAFFIC_PROVIDERS = (
    names.PROVIDER_AUTO,
    names.PROVIDER_ENVOY_GATEWAY,
    names.PROVIDER_ISTIO,
    names.PROVIDER_NONE,
)
# PreferClose is PreferSameZone's older name, kept by Kubernetes as an alias.
TRAFFIC_DISTRIBUTIONS = ("PreferSameZone", "PreferSameNode", "PreferClose")
DEFAULT_WEIGHT = 100
MAX_WEIGHT = 1000
# Gateway API allows 16 backendRefs in a rule: one per pod under policy Weighted.
MAX_WEIGHTED_REPLICAS = 16
MAX_SLOW_START_SECONDS = 3600
MAX_AFFINITY_SECONDS = 86400  # the Service API's own bound


@dataclass(frozen=True)
class GatewayRef:
    name: str
    namespace: str = ""  # the resource's own when empty
    section_name: str = ""


DEFAULT_FLOOR_PERCENT = 10
DEFAULT_MAX_STEP_PERCENT = 20
# A weight moves only when its target differs by more than this share of the full weight: measured load
# wobbles, and a route rewritten on every wobble would chase it.
LOAD_DEADBAND_PERCENT = 5


@dataclass(frozen=True)
class FollowLoad:
    """Weights that follow measured CPU: a pod at `cpu_capacity` gets the floor, an idle one its full weight;
    each weight moves at most `max_step_percent` per new sample."""

    cpu_capacity: float  # cores
    floor_percent: int = DEFAULT_FLOOR_PERCENT
    max_step_percent: int = DEFAULT_MAX_STEP_PERCENT


@dataclass(frozen=True)
class TrafficSpec:
    policy: str = names.POLICY_RANDOM
    gateway: GatewayRef | None = None
    provider: str = names.PROVIDER_AUTO
    primary_weight: int = DEFAULT_WEIGHT
    replica_weight: int = DEFAULT_WEIGHT
    slow_start_seconds: int = 0  # a pod that turns Healthy ramps up to its weight over this long
    follow_load: FollowLoad | None = None
    affinity_seconds: int = 0  # ClientIP session affinity on the plain Services, this long; 0: none
    distribution: str = ""  # the plain Services' trafficDistribution

    @property
    def routed(self) -> bool:
        """Whether a Gateway API route carries the traffic, not only the plain Services."""
        return self.gateway is not None

    @property
    def weighted(self) -> bool:
        return self.routed and self.policy == names.POLICY_WEIGHTED


@dataclass(frozen=True)
class FtsSpec:
    replicas: int = DEFAULT_REPLICAS
    mode: str = DEFAULT_MODE
    template: Mapping[str, Any] = field(default_factory=dict)
    health: HealthSpec = HealthSpec()
    service: ServiceSpec = ServiceSpec()
    max_unavailable: int | str = DEFAULT_MAX_UNAVAILABLE
    disruption_metadata: ObjectMetadata = NO_METADATA
    spread: SpreadSpec = SpreadSpec()
    failover: FailoverSpec = FailoverSpec()
    checkpoint: CheckpointSpec | None = None
    restore_from: str = ""  # "latest" or a checkpoint id: new and replaced pods restore from it
    paused: bool = False
    traffic: TrafficSpec = TrafficSpec()

    @property
    def primary_replica(self) -> bool:
        return self.mode == names.MODE_PRIMARY_REPLICA


def _int(raw: Mapping[str, Any], key: str, default: int, high: int, low: int = 0) -> int:
    """The value within [low, high] (the CRD's bounds, held again here), or the default if not an int."""
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        return default
    return max(low, min(high, value))


def _probe(raw: Any, default: ProbeSettings) -> ProbeSettings:
    if not isinstance(raw, Mapping):
        return default
    return ProbeSettings(
        period_seconds=_int(raw, "periodSeconds", default.period_seconds, MAX_PROBE_SECONDS, 1),
        timeout_seconds=_int(raw, "timeoutSeconds", default.timeout_seconds, MAX_PROBE_SECONDS, 1),
        failure_threshold=_int(raw, "failureThreshold", default.failure_threshold, MAX_FAILURE_THRESHOLD, 1),
        initial_delay_seconds=_int(
            raw, "initialDelaySeconds", default.initial_delay_seconds, MAX_PROBE_SECONDS
        ),
    )


def container_ports(template: Mapping[str, Any]) -> list[tuple[str, int, str]]:
    """(name, containerPort, protocol) of every container port in the pod template, in order."""
    found: list[tuple[str, int, str]] = []
    for container in template.get("spec", {}).get("containers", []) or []:
        for port in container.get("ports", []) or []:
            number = port.get("containerPort")
            if isinstance(number, int):
                name = port.get("name") or f"{container.get('name', 'c')}-{number}"
                found.append((name, number, port.get("protocol", "TCP")))
    return found


def _string_map(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, str)}


def _metadata(raw: Any) -> ObjectMetadata:
    raw = raw if isinstance(raw, Mapping) else {}
    return ObjectMetadata(_string_map(raw.get("labels")), _string_map(raw.get("annotations")))


def _service(raw: Any, template: Mapping[str, Any]) -> ServiceSpec:
    raw = raw if isinstance(raw, Mapping) else {}
    ports: list[ServicePort] = []
    for entry in raw.get("ports", []) or []:
        port = entry.get("port")
        if not isinstance(port, int):
            continue
        ports.append(
            ServicePort(
                name=str(entry.get("name") or f"port-{port}"),
                port=port,
                target_port=entry.get("targetPort", port),
                protocol=str(entry.get("protocol", "TCP")),
            )
        )
    if not ports:
        # With no ports given, the Services expose every container port under its own number.
        ports = [
            ServicePort(name=name, port=number, target_port=number, protocol=protocol)
            for name, number, protocol in container_ports(template)
        ]
    return ServiceSpec(
        type=str(raw.get("type", DEFAULT_SERVICE_TYPE)),
        ports=tuple(ports),
        metadata=_metadata(raw.get("metadata")),
    )


def _hooks(raw: Any) -> HooksSpec | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("port"), int):
        return None
    timeout = raw.get("timeoutSeconds")
    timeout = timeout if isinstance(timeout, int | float) and math.isfinite(timeout) else None
    return HooksSpec(
        port=raw["port"],
        promote_path=hook_path(raw.get("promotePath"), HooksSpec.promote_path),
        demote_path=hook_path(raw.get("demotePath"), HooksSpec.demote_path),
        timeout_seconds=min(30.0, max(0.1, float(timeout or HooksSpec.timeout_seconds))),
    )


def hook_path(value: Any, default: str) -> str:
    """The path as given when it is one, else the default: what follows host:port is never a URL."""
    return value if isinstance(value, str) and re.fullmatch(HOOK_PATH_PATTERN[1:-1], value) else default


def _checkpoint(raw: Any) -> CheckpointSpec | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("template"), Mapping):
        return None
    retention = raw.get("retention") or {}
    restore = raw.get("restoreTemplate")
    return CheckpointSpec(
        template=raw["template"],
        storage=raw.get("storage") or {"emptyDir": {}},
        schedule=str(raw.get("schedule") or ""),
        interval_seconds=_int(raw, "intervalSeconds", 0, MAX_CHECKPOINT_INTERVAL_SECONDS),
        source=str(raw.get("source") or CheckpointSpec.source),
        timeout_seconds=_int(
            raw, "timeoutSeconds", DEFAULT_CHECKPOINT_TIMEOUT_SECONDS, MAX_CHECKPOINT_TIMEOUT_SECONDS, 1
        ),
        retries=_int(raw, "retries", DEFAULT_CHECKPOINT_RETRIES, MAX_CHECKPOINT_RETRIES),
        keep_last=_int(retention, "keepLast", DEFAULT_CHECKPOINT_KEEP_LAST, CHECKPOINT_HISTORY_LIMIT, 1),
        max_age_seconds=_int(retention, "maxAgeSeconds", 0, MAX_CHECKPOINT_AGE_SECONDS),
        suspend=bool(raw.get("suspend", False)),
        labels=dict(raw.get("labels") or {}),
        restore_template=restore if isinstance(restore, Mapping) else None,
        job_metadata=_metadata(raw.get("jobMetadata")),
    )


def _threshold(raw: Any) -> Threshold | None:
    if not isinstance(raw, Mapping):
        return None
    above = parse_quantity(str(raw.get("above", "")))
    if above is None:
        return None
    recover = parse_quantity(str(raw.get("recoverBelow", "")))
    return Threshold(above, min(recover, above) if recover is not None else above * RECOVER_SHARE)


def _metrics_health(raw: Any) -> MetricsHealthSpec | None:
    if not isinstance(raw, Mapping):
        return None
    cpu, memory = _threshold(raw.get("cpu")), _threshold(raw.get("memory"))
    if cpu is None and memory is None:
        return None
    return MetricsHealthSpec(
        cpu=cpu,
        memory=memory,
        for_seconds=_int(raw, "forSeconds", DEFAULT_BREACH_SECONDS, MAX_BREACH_SECONDS),
        replace_after_seconds=_int(
            raw, "replaceAfterSeconds", DEFAULT_REPLACE_AFTER_SECONDS, MAX_BREACH_SECONDS
        ),
        stale_after_seconds=_int(
            raw, "staleAfterSeconds", DEFAULT_STALE_AFTER_SECONDS, MAX_BREACH_SECONDS, 1
        ),
    )


def _follow_load(raw: Any) -> FollowLoad | None:
    if not isinstance(raw, Mapping):
        return None
    capacity = parse_quantity(str(raw.get("cpuCapacity", "")))
    if not capacity:
        return None
    return FollowLoad(
        cpu_capacity=capacity,
        floor_percent=_int(raw, "floorPercent", DEFAULT_FLOOR_PERCENT, 100),
        max_step_percent=_int(raw, "maxStepPercent", DEFAULT_MAX_STEP_PERCENT, 100, 1),
    )


def _traffic(raw: Any) -> TrafficSpec:
    if not isinstance(raw, Mapping):
        return TrafficSpec()
    gateway_raw = raw.get("gatewayRef")
    gateway = None
    if isinstance(gateway_raw, Mapping) and gateway_raw.get("name"):
        gateway = GatewayRef(
            name=str(gateway_raw["name"]),
            namespace=str(gateway_raw.get("namespace") or ""),
            section_name=str(gateway_raw.get("sectionName") or ""),
        )
    weights: Mapping[str, Any] = raw["weights"] if isinstance(raw.get("weights"), Mapping) else {}
    affinity: Mapping[str, Any] | None = (
        raw["sessionAffinity"] if isinstance(raw.get("sessionAffinity"), Mapping) else None
    )
    policy, provider = str(raw.get("policy") or ""), str(raw.get("provider") or "")
    return TrafficSpec(
        policy=policy if policy in TRAFFIC_POLICIES else names.POLICY_RANDOM,
        gateway=gateway,
        provider=provider if provider in TRAFFIC_PROVIDERS else names.PROVIDER_AUTO,
        primary_weight=_int(weights, "primary", DEFAULT_WEIGHT, MAX_WEIGHT),
        replica_weight=_int(weights, "replica", DEFAULT_WEIGHT, MAX_WEIGHT),
        slow_start_seconds=_int(weights, "slowStartSeconds", 0, MAX_SLOW_START_SECONDS),
        follow_load=_follow_load(weights.get("followLoad")),
        affinity_seconds=(
            _int(affinity, "clientIPTimeoutSeconds", 10800, MAX_AFFINITY_SECONDS, 1)
            if affinity is not None
            else 0
        ),
        distribution=str(raw.get("distribution") or ""),
    )


def parse_spec(raw: Mapping[str, Any]) -> FtsSpec:
    template = raw.get("template") or {}
    health_raw = raw.get("health") or {}
    spread_raw = raw.get("spread") or {}
    disruption_raw = raw.get("disruption") or {}
    failover_raw = raw.get("failover") or {}
    keys = spread_raw.get("topologyKeys")
    max_unavailable = disruption_raw.get("maxUnavailable", DEFAULT_MAX_UNAVAILABLE)
    return FtsSpec(
        replicas=_int(raw, "replicas", DEFAULT_REPLICAS, MAX_REPLICAS),
        mode=str(raw.get("mode", DEFAULT_MODE)),
        template=template,
        health=HealthSpec(
            readiness=_probe(health_raw.get("readinessProbe"), DEFAULT_READINESS),
            liveness=_probe(health_raw.get("livenessProbe"), DEFAULT_LIVENESS),
            startup=_probe(health_raw.get("startupProbe"), DEFAULT_STARTUP),
            unready_timeout_seconds=_int(
                health_raw,
                "unreadyTimeoutSeconds",
                DEFAULT_UNREADY_TIMEOUT_SECONDS,
                MAX_UNREADY_TIMEOUT_SECONDS,
                1,
            ),
            metrics=_metrics_health(health_raw.get("metrics")),
        ),
        service=_service(raw.get("service"), template),
        max_unavailable=max_unavailable if isinstance(max_unavailable, int | str) else 1,
        disruption_metadata=_metadata(disruption_raw.get("metadata")),
        spread=SpreadSpec(
            topology_keys=tuple(keys) if isinstance(keys, list) else DEFAULT_TOPOLOGY_KEYS,
            when_unsatisfiable=str(spread_raw.get("whenUnsatisfiable", DEFAULT_WHEN_UNSATISFIABLE)),
        ),
        failover=FailoverSpec(
            hooks=_hooks(failover_raw.get("hooks")),
            delay_seconds=_int(
                failover_raw, "delaySeconds", DEFAULT_FAILOVER_DELAY_SECONDS, MAX_FAILOVER_DELAY_SECONDS
            ),
            node_lost_after_seconds=node_lost_after_seconds(raw),
            max_per_hour=_int(
                failover_raw, "maxPerHour", DEFAULT_FAILOVER_MAX_PER_HOUR, MAX_FAILOVERS_PER_HOUR, 1
            ),
            min_interval_seconds=_int(
                failover_raw,
                "minIntervalSeconds",
                DEFAULT_FAILOVER_MIN_INTERVAL_SECONDS,
                MAX_FAILOVER_MIN_INTERVAL_SECONDS,
            ),
        ),
        checkpoint=_checkpoint(raw.get("checkpoint")),
        restore_from=str((raw.get("restore") or {}).get("checkpoint") or ""),
        paused=bool(raw.get("paused", False)),
        traffic=_traffic(raw.get("traffic")),
    )


def node_lost_after_seconds(raw: Mapping[str, Any]) -> int:
    """spec.failover.nodeLostAfterSeconds of a raw spec, without parsing the rest (read four times a second)."""
    failover = raw.get("failover")
    if not isinstance(failover, Mapping):
        return DEFAULT_NODE_LOST_AFTER_SECONDS
    return _int(
        failover,
        "nodeLostAfterSeconds",
        DEFAULT_NODE_LOST_AFTER_SECONDS,
        MAX_NODE_LOST_AFTER_SECONDS,
        MIN_NODE_LOST_AFTER_SECONDS,
    )


_PERCENT = re.compile(r"^(\d{1,3})%$")


def resolve_max_unavailable(value: int | str, replicas: int) -> int:
    """An absolute count from an int or a percentage (rounded down, as Deployments do), at least 1."""
    if isinstance(value, int):
        return max(1, value)
    match = _PERCENT.match(value)
    if not match:
        return 1
    return max(1, replicas * int(match.group(1)) // 100)


def metadata_key_problem(key: str) -> str:
    """Why Kubernetes would refuse `key` as a label or annotation key, or why we do; "" when it is fine."""
    if key.startswith(names.PREFIX):
        return "the ftso.dev/ prefix is reserved for the operator"
    prefix = key.rpartition("/")[0]
    if len(prefix) > MAX_KEY_PREFIX_LENGTH or not METADATA_KEY.match(key):
        return (
            "not a valid key: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    return ""


def owned_metadata(spec: FtsSpec) -> dict[str, ObjectMetadata]:
    """The spec field -> the labels and annotations it asks for on owned objects."""
    found = {"service.metadata": spec.service.metadata, "disruption.metadata": spec.disruption_metadata}
    if spec.checkpoint is not None:
        found["checkpoint.jobMetadata"] = spec.checkpoint.job_metadata
    return found


def _metadata_problems(spec: FtsSpec) -> list[str]:
    # Keys are judged here, not in the CRD: a CEL rule over map keys is priced by the longest key a request
    # could hold, which no schema bounds, and the API server refuses such rules.
    problems = []
    for where, metadata in owned_metadata(spec).items():
        for kind, entries in (("labels", metadata.labels), ("annotations", metadata.annotations)):
            for key in sorted(entries):
                if problem := metadata_key_problem(key):
                    problems.append(f"{where}.{kind} key {key!r}: {problem}")
    return problems


def operator_judged_problems(spec: FtsSpec) -> list[str]:
    """Problems the CRD schema cannot express; each is a sentence a person understands."""
    problems: list[str] = []
    template_labels = (spec.template.get("metadata") or {}).get("labels") or {}
    reserved = sorted(k for k in template_labels if str(k).startswith(names.PREFIX))
    if reserved:
        problems.append(
            f"template.metadata.labels uses {', '.join(reserved)}: the ftso.dev/ prefix is reserved "
            "for the operator"
        )
    named_ports = {name for name, _, _ in container_ports(spec.template)}
    for port in spec.service.ports:
        if isinstance(port.target_port, str) and port.target_port not in named_ports:
            problems.append(
                f"service port {port.name!r} targets the named port {port.target_port!r}, "
                "which no container declares"
            )
    if spec.checkpoint is not None and spec.checkpoint.schedule:
        from ftso.schedule import CronError, parse_cron

        try:
            parse_cron(spec.checkpoint.schedule)
        except CronError as error:
            problems.append(f"checkpoint.schedule {spec.checkpoint.schedule!r}: {error}")
    if spec.restore_from and (spec.checkpoint is None or spec.checkpoint.restore_template is None):
        problems.append(
            "spec.restore needs checkpoint.restoreTemplate: the container that loads a checkpoint"
        )
    if isinstance(spec.max_unavailable, str) and not _PERCENT.match(spec.max_unavailable):
        problems.append(
            f"disruption.maxUnavailable {spec.max_unavailable!r} is neither a count nor a percentage"
        )
    return problems + _metadata_problems(spec) + _traffic_problems(spec)


def _traffic_problems(spec: FtsSpec) -> list[str]:
    traffic = spec.traffic
    problems = []
    if traffic.routed and not spec.service.ports:
        problems.append("traffic.gatewayRef needs a Service port to route to: the template declares none")
    if traffic.weighted and spec.replicas > MAX_WEIGHTED_REPLICAS:
        problems.append(
            f"traffic.policy Weighted routes to each pod by its own backendRef, and Gateway API allows "
            f"{MAX_WEIGHTED_REPLICAS} in a rule: at most {MAX_WEIGHTED_REPLICAS} replicas"
        )
    return problems
