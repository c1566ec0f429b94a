"""Every public name: the API, labels, annotations, the finalizer, Services, mount paths, and the values of
roles, health, phases, condition types and reasons, Event reasons and promotion reasons. Users, their
scripts, dashboards and the tests rely on these; nothing else in the package spells them."""

import hashlib
from enum import StrEnum
from typing import Final

GROUP: Final = "ftso.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "FaultTolerantService"
PLURAL: Final = "faulttolerantservices"
SINGULAR: Final = "faulttolerantservice"
SHORT_NAME: Final = "fts"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

PREFIX: Final = "ftso.dev/"
LABEL_SERVICE: Final = PREFIX + "service"
LABEL_ROLE: Final = PREFIX + "role"
LABEL_SERVING: Final = PREFIX + "serving"
LABEL_ORDINAL: Final = PREFIX + "ordinal"
LABEL_CHECKPOINT: Final = PREFIX + "checkpoint"  # on a checkpoint Job and its pods: the checkpoint id
LABEL_CHECKPOINT_OF: Final = LABEL_SERVICE + "-checkpoint"  # on checkpoint pods: the resource's name
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "ftso"
LABEL_ZONE: Final = "topology.kubernetes.io/zone"
# Kubernetes' non-graceful node shutdown: an admin's word that the node is off, so its pods are stopped.
TAINT_OUT_OF_SERVICE: Final = "node.kubernetes.io/out-of-service"
# <name>-primary has no selector: the operator writes its EndpointSlice itself, right after the labels move,
# so routing a new primary never waits in the controller manager's EndpointSlice queue.
LABEL_SLICE_SERVICE: Final = "kubernetes.io/service-name"
LABEL_SLICE_MANAGED_BY: Final = "endpointslice.kubernetes.io/managed-by"
SLICE_MANAGER: Final = "operator.ftso.dev"

ANNOTATION_TERM: Final = PREFIX + "term"
# The other live pods' IP addresses, one a line, in ordinal order (fenced and terminating pods left out):
# the workload's peers for replication, as the file `peers` next to `role` and `term`.
ANNOTATION_PEERS: Final = PREFIX + "peers"
ANNOTATION_TEMPLATE_HASH: Final = PREFIX + "template-hash"
ANNOTATION_RESTORED_FROM: Final = PREFIX + "restored-from"
# On Services, the PDB and checkpoint Jobs: the label and annotation keys the spec asked for, as JSON. Those keys
# are ours; a key removed from the spec is removed from the object, a key another writer added stays.
ANNOTATION_SPEC_METADATA: Final = PREFIX + "spec-metadata"
# Set by users (or GitOps) on the resource: requests answered once in status.
ANNOTATION_SWITCHOVER: Final = PREFIX + "switchover"  # "<pod>@<nonce>"; an empty pod: the best replica
ANNOTATION_CHECKPOINT: Final = PREFIX + "checkpoint"  # any new value: take a checkpoint now
# Set by the workload on its pods: how good a candidate for primary each one is.
ANNOTATION_FAILOVER_PRIORITY: Final = PREFIX + "failover-priority"
ANNOTATION_REPLICATION_LAG: Final = PREFIX + "replication-lag"
# Set by users or the workload on a pod: its weight under traffic policy Weighted (0 to 1000), instead of its role's.
ANNOTATION_WEIGHT: Final = PREFIX + "weight"

# Traffic policies (spec.traffic): kube-proxy's random choice on the plain Services, or a Gateway API route.
POLICY_RANDOM: Final = "Random"
POLICY_ROUND_ROBIN: Final = "RoundRobin"
POLICY_WEIGHTED: Final = "Weighted"
PROVIDER_AUTO: Final = "Auto"
PROVIDER_ENVOY_GATEWAY: Final = "EnvoyGateway"
PROVIDER_ISTIO: Final = "Istio"
PROVIDER_NONE: Final = "None"
GATEWAY_GROUP: Final = "gateway.networking.k8s.io"
FINALIZER: Final = PREFIX + "finalizer"  # kopf's setting; kopf adds it to nothing (no change handlers)

ROLE_PRIMARY: Final = "primary"
ROLE_REPLICA: Final = "replica"
ROLE_FENCED: Final = "fenced"

MODE_PRIMARY_REPLICA: Final = "PrimaryReplica"
MODE_ACTIVE_ACTIVE: Final = "ActiveActive"

ROLE_MOUNT_PATH: Final = "/etc/ftso"  # files `role`, `term` and `peers`, kept current by the kubelet
CHECKPOINT_MOUNT: Final = "/checkpoints"  # checkpoint storage in checkpoint Jobs and restore containers

# The operator's own pods, as the Helm chart labels them: `ftso report` collects their logs.
OPERATOR_POD_SELECTOR: Final = "app.kubernetes.io/name=ftso"

FIELD_MANAGER: Final = "ftso"
COMPONENT: Final = "ftso-operator"  # Events' source
REPORTING_COMPONENT: Final = PREFIX + "operator"

# The `controller` label of controller-runtime's metrics and the `name` label of the work queue's.
CONTROLLER: Final = SINGULAR
READINESS_PATH: Final = "/readyz"  # on the metrics port; liveness is kopf's endpoint (`--liveness`)


class Metric(StrEnum):
    """The operator's Prometheus metrics (counters without `_total`, as prometheus_client names them).
    The controller-runtime and workqueue ones carry the names existing dashboards already query."""

    RECONCILE = "controller_runtime_reconcile"  # {controller, result}
    RECONCILE_ERRORS = "controller_runtime_reconcile_errors"
    RECONCILE_TIME = "controller_runtime_reconcile_time_seconds"
    MAX_CONCURRENT_RECONCILES = "controller_runtime_max_concurrent_reconciles"
    ACTIVE_WORKERS = "controller_runtime_active_workers"
    QUEUE_DEPTH = "workqueue_depth"
    QUEUE_ADDS = "workqueue_adds"
    QUEUE_DURATION = "workqueue_queue_duration_seconds"
    WORK_DURATION = "workqueue_work_duration_seconds"
    QUEUE_RETRIES = "workqueue_retries"
    UNFINISHED_WORK = "workqueue_unfinished_work_seconds"
    LONGEST_RUNNING = "workqueue_longest_running_processor_seconds"
    REST_REQUESTS = "rest_client_requests"  # {code, method}
    # Ours. The first three predate the controller-runtime names and stay for existing users.
    RECONCILES = "ftso_reconciles"
    RECONCILE_ERRORS_OURS = "ftso_reconcile_errors"
    RECONCILE_DURATION = "ftso_reconcile_duration_seconds"
    API_REQUESTS = "ftso_api_requests"  # {verb}, WATCH apart
    PROMOTIONS = "ftso_promotions"  # {reason}
    LEADER = "ftso_leader"
    FAILOVER_DURATION = "ftso_failover_duration_seconds"
    # Per resource, {namespace, name}: the resource's, not the scraped pod's (the ServiceMonitor honours it).
    REPLICAS = "ftso_replicas"
    READY_REPLICAS = "ftso_ready_replicas"
    SERVING_REPLICAS = "ftso_serving_replicas"
    PRIMARY_AVAILABLE = "ftso_primary_available"
    FAILOVER_THROTTLED = "ftso_failover_throttled"
    CHECKPOINT_FAILING = "ftso_checkpoint_failing"
    CHECKPOINT_LAST_SUCCESS = "ftso_checkpoint_last_success_timestamp_seconds"


class ReconcileResult(StrEnum):
    """controller_runtime_reconcile_total's `result` label."""

    SUCCESS = "success"
    ERROR = "error"
    REQUEUE = "requeue"
    REQUEUE_AFTER = "requeue_after"


class Health(StrEnum):
    """The operator's judgement of a pod, in status.pods[].health."""

    HEALTHY = "Healthy"
    STARTING = "Starting"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    LOST = "Lost"
    TERMINATING = "Terminating"


class Promotion(StrEnum):
    """Why the primary changed (or could not): failover records, Events, the promotions metric."""

    ELECTED = "Elected"
    FAILOVER = "Failover"
    SWITCHOVER = "Switchover"
    SCALE_DOWN = "ScaleDown"
    ROLLING_UPDATE = "RollingUpdate"
    LOST = "Lost"  # the primary is gone and nobody can take over


PLANNED: Final = frozenset({Promotion.SWITCHOVER, Promotion.SCALE_DOWN, Promotion.ROLLING_UPDATE})


class ChangeKind(StrEnum):
    """status.failovers[].kind."""

    FAILOVER = "Failover"
    SWITCHOVER = "Switchover"


class CheckpointResult(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class SwitchoverResult(StrEnum):
    COMPLETED = "Completed"
    REFUSED = "Refused"


class Phase(StrEnum):
    READY = "Ready"
    UPDATING = "Updating"
    DEGRADED = "Degraded"
    PENDING = "Pending"
    UNAVAILABLE = "Unavailable"
    PAUSED = "Paused"
    INVALID = "Invalid"


class ConditionType(StrEnum):
    READY = "Ready"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    INVALID_SPEC = "InvalidSpec"
    PRIMARY_UNAVAILABLE = "PrimaryUnavailable"
    FAILING_OVER = "FailingOver"
    CHECKPOINT_SUCCEEDED = "CheckpointSucceeded"
    NODE_LOSS_SUSPENDED = "NodeLossSuspended"
    # As Deployment's: a pod, Job or owned object the API server refused to create, in its words.
    REPLICA_FAILURE = "ReplicaFailure"
    # spec.traffic is in force: its route and policy objects exist and a Gateway controller accepted the route.
    TRAFFIC_POLICY_READY = "TrafficPolicyReady"
    # health.metrics can judge: metrics.k8s.io answers with fresh samples of every running pod.
    METRICS_AVAILABLE = "MetricsAvailable"


class Reason(StrEnum):
    """Condition reasons (a failed checkpoint's condition carries its Job's reason instead)."""

    ALL_REPLICAS_READY = "AllReplicasReady"
    NOT_ALL_REPLICAS_READY = "NotAllReplicasReady"
    SERVING = "Serving"
    PRIMARY_NOT_SERVING = "PrimaryNotServing"
    NO_SERVING_PODS = "NoServingPods"
    STABLE = "Stable"
    PAUSED = "Paused"
    INVALID_SPEC = "InvalidSpec"
    REPLACING = "Replacing"
    SCALING = "Scaling"
    CREATING = "Creating"
    ROLLING_UPDATE = "RollingUpdate"
    STARTING = "Starting"
    PODS_UNHEALTHY = "PodsUnhealthy"
    ALL_HEALTHY = "AllHealthy"
    OPERATOR_VALIDATION_FAILED = "OperatorValidationFailed"
    SPEC_VALID = "SpecValid"
    NODES_TRUSTED = "NodesTrusted"
    PARTITION_SUSPECTED = "PartitionSuspected"
    HEARTBEATS_IN_DOUBT = "HeartbeatsInDoubt"
    THROTTLED = "Throttled"
    IN_PROGRESS = "InProgress"
    IDLE = "Idle"
    NO_HEALTHY_REPLICA = "NoHealthyReplica"
    PRIMARY_ELECTED = "PrimaryElected"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    JOB_AND_SOURCE_GONE = "JobAndSourceGone"  # a checkpoint that can neither finish nor restart
    FAILED_CREATE = "FailedCreate"
    CREATES_ACCEPTED = "CreatesAccepted"
    KUBE_PROXY = "KubeProxy"  # policy Random without a Gateway: the plain Services
    GATEWAY_API_MISSING = "GatewayAPIMissing"
    GATEWAY_NOT_FOUND = "GatewayNotFound"
    PROVIDER_MISSING = "ProviderMissing"  # no installed implementation's object carries the algorithm
    ROUTE_PENDING = "RoutePending"  # written; no Gateway controller accepted it (yet)
    ROUTE_NOT_ACCEPTED = "RouteNotAccepted"
    ROUTE_ACCEPTED = "RouteAccepted"
    METRICS_FRESH = "MetricsFresh"
    METRICS_UNAVAILABLE = "MetricsUnavailable"  # the metrics API is missing or failing
    METRICS_STALE = "MetricsStale"  # some running pods have no recent sample
    METRICS_MALFORMED = "MetricsMalformed"  # some PodMetrics are not PodMetrics (a time without a zone, ...)
    NAME_TAKEN = "NameTaken"  # an object of the route's or policy's name that ftso did not create
    TRAFFIC_API_ERROR = "TrafficAPIError"  # reading or writing the route or its objects failed
    # A pod's name waits: its last pod vanished on an unreachable node and may still run there.
    POD_MAY_STILL_RUN = "PodMayStillRun"
    TRAFFIC_LOOKUP_PENDING = "TrafficLookupPending"  # a new resource's route is being read the first time


class EventReason(StrEnum):
    BECAME_PRIMARY = "BecamePrimary"
    PRIMARY_UNAVAILABLE = "PrimaryUnavailable"
    FAILOVER_THROTTLED = "FailoverThrottled"
    SWITCHOVER_REFUSED = "SwitchoverRefused"
    FAILOVER_STARTED = "FailoverStarted"
    SWITCHOVER_STARTED = "SwitchoverStarted"
    FAILOVER_COMPLETED = "FailoverCompleted"
    SWITCHOVER_COMPLETED = "SwitchoverCompleted"
    RECOVERY_STARTED = "RecoveryStarted"
    RECOVERED_FROM_CHECKPOINT = "RecoveredFromCheckpoint"
    NOT_RESTORED = "NotRestored"  # replaced during a recovery: it did not load the checkpoint
    NODE_LOSS_SUSPENDED = "NodeLossSuspended"
    NODE_LOSS_RESUMED = "NodeLossResumed"
    POD_LOST = "PodLost"
    POD_FAILED = "PodFailed"
    FENCED = "Fenced"
    SCALED_DOWN = "ScaledDown"
    CREATED = "Created"
    ROLLED = "Rolled"
    INVALID_SPEC = "InvalidSpec"
    CHECKPOINT_STARTED = "CheckpointStarted"
    CHECKPOINT_SUCCEEDED = "CheckpointSucceeded"
    CHECKPOINT_FAILED = "CheckpointFailed"
    CHECKPOINT_SKIPPED = "CheckpointSkipped"
    HOOK_FAILED = "HookFailed"
    FAILED_CREATE = "FailedCreate"  # once when creates start failing, not once per retry
    USAGE_BREACH = "UsageBreach"  # a pod drained or replaced for its measured usage (health.metrics)
    # pods over a usage threshold kept serving: draining them would pass disruption.maxUnavailable
    USAGE_DRAIN_LIMITED = "UsageDrainLimited"
    TRAFFIC_POLICY_NOT_READY = "TrafficPolicyNotReady"  # once when TrafficPolicyReady turns False
    INVALID_ANNOTATION = "InvalidAnnotation"  # a workload's failover annotation ignored, said at an election
    TERM_RAISED = (
        "TermRaised"  # status.term raised to a pod's higher term: a wiped status, a bogus annotation
    )
    POD_MAY_STILL_RUN = "PodMayStillRun"  # once when a pod vanishes on an unreachable node: its name waits


def service_names(name: str) -> tuple[str, str, str]:
    """The Services of one resource: all serving pods, the primary, the replicas."""
    return name, f"{name}-primary", f"{name}-replicas"


def pod_name(name: str, ordinal: int) -> str:
    return f"{name}-{ordinal}"


DNS_LABEL_MAX = 63


def bounded_name(base: str, suffix: str) -> str:
    """`<base><suffix>`, or when that is too long for a DNS label, `base` shortened and made unique again by
    a hash of it: a name Kubernetes accepts for any resource name the CRD allows."""
    name = base + suffix
    if len(name) <= DNS_LABEL_MAX:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[: DNS_LABEL_MAX - len(suffix) - 9].rstrip('-')}-{digest}{suffix}"


def checkpoint_job_name(name: str, checkpoint_id: str) -> str:
    return bounded_name(name, f"-ckpt-{checkpoint_id}")
