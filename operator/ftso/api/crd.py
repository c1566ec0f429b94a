"""The one source of the FaultTolerantService CRD: `build_crd()` renders it, `crds/` holds its YAML.

The schema's defaults come from `ftso.api.spec`, so the operator and the API server agree on them. CEL
rules carry messages meant for a person reading `kubectl apply` output.
"""

from __future__ import annotations

from typing import Any

import yaml

from ftso import names
from ftso.api import spec as defaults
from ftso.api import template

Schema = dict[str, Any]


def _rule(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


def _obj(properties: dict[str, Schema], *, required: list[str] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


def _str(description: str = "", **extra: Any) -> Schema:
    schema: Schema = {"type": "string", **extra}
    if description:
        schema["description"] = description
    return schema


def _int(description: str = "", **extra: Any) -> Schema:
    schema: Schema = {"type": "integer", **extra}
    if description:
        schema["description"] = description
    return schema


def _positive(field: str, description: str, default: int | None, high: int) -> Schema:
    return _bounded(field, description, default, low=1, high=high)


def _bounded(field: str, description: str, default: int | None, *, low: int, high: int) -> Schema:
    """An integer within [low, high], each bound with its own message."""
    low_rule = (
        _rule("self > 0", f"{field} must be a positive number")
        if low == 1
        else _rule(f"self >= {low}", f"{field} must be {low} or more")
    )
    schema = _int(
        description,
        **{
            "x-kubernetes-validations": [
                low_rule,
                _rule(f"self <= {high}", f"{field} must be at most {high}"),
            ]
        },
    )
    if default is not None:
        schema["default"] = default
    return schema


def _string_map(description: str) -> Schema:
    return {"type": "object", "description": description, "additionalProperties": {"type": "string"}}


def object_metadata(field: str, objects: str, *, synced: bool = True) -> Schema:
    """Labels and annotations the operator puts on objects it owns: bounded in count and size, label values in
    Kubernetes' format. Keys are judged by the operator (InvalidSpec): see spec.metadata_key_problem."""
    label_value: Schema = {
        "type": "string",
        "maxLength": defaults.MAX_LABEL_VALUE_LENGTH,
        "x-kubernetes-validations": [
            _rule(
                f"self.matches('{defaults.LABEL_VALUE_PATTERN}')",
                f"{field}.labels values must be at most 63 letters, digits, '-', '_' or '.', starting "
                "and ending with a letter or digit",
            )
        ],
    }
    entries = defaults.MAX_METADATA_ENTRIES
    sync = (
        "Kept in sync: a key removed here is removed from the objects; keys others add to them stay. "
        if synced
        else "Set when an object is created. "
    )
    return _obj(
        {
            "labels": {
                "type": "object",
                "maxProperties": entries,
                "additionalProperties": label_value,
                "description": f"At most {entries} labels.",
            },
            "annotations": {
                "type": "object",
                "maxProperties": entries,
                "additionalProperties": _str(maxLength=defaults.MAX_ANNOTATION_VALUE_LENGTH),
                "description": f"At most {entries} annotations of at most "
                f"{defaults.MAX_ANNOTATION_VALUE_LENGTH} characters each.",
            },
        },
        description=f"Labels and annotations of {objects}. {sync}The operator's own labels "
        f"({names.LABEL_SERVICE}, {names.LABEL_MANAGED_BY}, ...) win over the same keys here; keys under "
        f"{names.PREFIX} are refused (InvalidSpec).",
    )


def _probe_settings(kind: str, default: defaults.ProbeSettings) -> Schema:
    field = f"health.{kind}Probe"
    return _obj(
        {
            "periodSeconds": _positive(
                f"{field}.periodSeconds",
                "How often to probe.",
                default.period_seconds,
                defaults.MAX_PROBE_SECONDS,
            ),
            "timeoutSeconds": _positive(
                f"{field}.timeoutSeconds",
                "When a probe times out.",
                default.timeout_seconds,
                defaults.MAX_PROBE_SECONDS,
            ),
            "failureThreshold": _positive(
                f"{field}.failureThreshold",
                "Consecutive failures before the probe counts as failed.",
                default.failure_threshold,
                defaults.MAX_FAILURE_THRESHOLD,
            ),
            "initialDelaySeconds": _bounded(
                f"{field}.initialDelaySeconds",
                "Delay before the first probe.",
                default.initial_delay_seconds,
                low=0,
                high=defaults.MAX_PROBE_SECONDS,
            ),
        },
        description=f"Settings of the default {kind} probe, given to containers that have none.",
    )


def _container() -> Schema:
    port = _obj(
        {
            "name": template.port_name(),
            "containerPort": _int(
                "",
                **{
                    "x-kubernetes-validations": [
                        _rule("self >= 1 && self <= 65535", "containerPort must be between 1 and 65535")
                    ]
                },
            ),
            "protocol": _str("", enum=["TCP", "UDP", "SCTP"]),
        },
        required=["containerPort"],
        **{"x-kubernetes-preserve-unknown-fields": True},
    )
    ports = {
        "type": "array",
        "maxItems": 64,
        "items": port,
        "x-kubernetes-validations": [
            _rule(
                "self.all(p, !has(p.name) || self.filter(q, has(q.name) && q.name == p.name).size() == 1)",
                "a container's ports must have unique names",
            )
        ],
    }
    return _obj(
        {
            **template.container_properties(),
            "image": _str("Container image.", maxLength=1024),
            "ports": ports,
        },
        required=["name", "image"],
        **{"x-kubernetes-preserve-unknown-fields": True},
    )


def _template() -> Schema:
    pod_spec_extras: Schema = {
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-validations": [
            _rule(
                "has(self.containers) && size(self.containers) > 0",
                "template.spec.containers must list at least one container",
            ),
            *template.pod_spec_rules(),
        ],
    }
    pod_spec = _obj(
        {
            "containers": {
                "type": "array",
                "maxItems": 16,
                "items": _container(),
                "x-kubernetes-validations": [
                    _rule(
                        "self.all(c, self.filter(d, d.name == c.name).size() == 1)",
                        "template.spec.containers must have unique names",
                    )
                ],
            },
            "volumes": template.volumes(),
        },
        description="A pod spec as in a Deployment's template; fields beyond containers are kept as given.",
        **pod_spec_extras,
    )
    return _obj(
        {
            "metadata": _obj(
                {
                    "labels": _string_map("Labels given to every pod."),
                    "annotations": _string_map("Annotations given to every pod."),
                }
            ),
            "spec": pod_spec,
        },
        required=["spec"],
        description="The pod template, as in a Deployment.",
    )


def _service() -> Schema:
    port = _obj(
        {
            "name": _str(
                "Port name (a DNS label).",
                maxLength=15,
                **{
                    "x-kubernetes-validations": [
                        _rule(
                            "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
                            "service port names must be lowercase letters, digits and '-'",
                        )
                    ]
                },
            ),
            "port": _int(
                "Port the Services expose.",
                **{
                    "x-kubernetes-validations": [
                        _rule("self >= 1 && self <= 65535", "service ports must be between 1 and 65535")
                    ]
                },
            ),
            "targetPort": {
                "x-kubernetes-int-or-string": True,
                "description": "Container port number or name; defaults to port.",
            },
            "protocol": _str("", enum=["TCP", "UDP", "SCTP"], default="TCP"),
        },
        required=["port"],
    )
    return _obj(
        {
            "type": _str(
                "Type of the three Services.",
                enum=list(defaults.SERVICE_TYPES),
                default=defaults.DEFAULT_SERVICE_TYPE,
            ),
            "ports": {
                "type": "array",
                "maxItems": 16,
                "items": port,
                "description": "Ports of the Services; by default every container port.",
                "x-kubernetes-validations": [
                    _rule(
                        "self.all(p, !has(p.name) || self.filter(q, has(q.name) && q.name == p.name).size() == 1)",
                        "service.ports must have unique names",
                    ),
                    _rule(
                        "self.size() <= 1 || self.all(p, has(p.name))",
                        "service.ports need a name each when there is more than one",
                    ),
                ],
            },
            "metadata": object_metadata("service.metadata", "the Services"),
        },
        description="The Services <name>, <name>-primary and <name>-replicas.",
    )


def _container_template(description: str) -> Schema:
    return _obj(
        {"name": _str(maxLength=63), "image": _str(maxLength=1024)},
        required=["name", "image"],
        description=description,
        **{"x-kubernetes-preserve-unknown-fields": True},
    )


def _checkpoint_retention() -> Schema:
    return _obj(
        {
            "keepLast": _positive(
                "checkpoint.retention.keepLast",
                "Successful checkpoints kept.",
                defaults.DEFAULT_CHECKPOINT_KEEP_LAST,
                defaults.CHECKPOINT_HISTORY_LIMIT,
            ),
            "maxAgeSeconds": _bounded(
                "checkpoint.retention.maxAgeSeconds",
                "Older checkpoints go (0: no limit).",
                None,
                low=0,
                high=defaults.MAX_CHECKPOINT_AGE_SECONDS,
            ),
        }
    )


def _checkpoint() -> Schema:
    schema = _obj(
        {
            "schedule": _str("A cron schedule, five fields, in UTC.", maxLength=128),
            "intervalSeconds": _bounded(
                "checkpoint.intervalSeconds",
                "Or: every this many seconds.",
                None,
                low=0,
                high=defaults.MAX_CHECKPOINT_INTERVAL_SECONDS,
            ),
            "source": _str(
                "Replica: a healthy replica, else the primary. Primary: the primary.",
                enum=list(defaults.CHECKPOINT_SOURCES),
                default=defaults.CheckpointSpec.source,
            ),
            "template": _container_template(
                "The container the checkpoint Job runs. It gets FTSO_TARGET_POD, FTSO_TARGET_IP, "
                "FTSO_TARGET_PORT, FTSO_CHECKPOINT_ID, FTSO_TERM, FTSO_CHECKPOINT_DIR and FTSO_CHECKPOINT_PATH."
            ),
            "storage": {
                "type": "object",
                "description": "A volume source (persistentVolumeClaim, nfs, ...) mounted at /checkpoints.",
                "x-kubernetes-preserve-unknown-fields": True,
            },
            "labels": _string_map("Labels of the checkpoint Jobs' pods."),
            "timeoutSeconds": _positive(
                "checkpoint.timeoutSeconds",
                "A checkpoint running longer fails.",
                defaults.DEFAULT_CHECKPOINT_TIMEOUT_SECONDS,
                defaults.MAX_CHECKPOINT_TIMEOUT_SECONDS,
            ),
            "retries": _bounded(
                "checkpoint.retries",
                "Retries of a failed checkpoint pod.",
                defaults.DEFAULT_CHECKPOINT_RETRIES,
                low=0,
                high=defaults.MAX_CHECKPOINT_RETRIES,
            ),
            "retention": _checkpoint_retention(),
            "suspend": {"type": "boolean", "default": False, "description": "No scheduled checkpoints."},
            "restoreTemplate": _container_template(
                "The init container that loads a checkpoint into new pods (spec.restore, automatic "
                "recovery). It gets FTSO_CHECKPOINT_ID, FTSO_CHECKPOINT_DIR and FTSO_CHECKPOINT_PATH."
            ),
            "jobMetadata": object_metadata("checkpoint.jobMetadata", "the checkpoint Jobs", synced=False),
        },
        required=["template"],
        description=f"Checkpoint Jobs, on a schedule and on request (annotation {names.ANNOTATION_CHECKPOINT}).",
    )
    schema["x-kubernetes-validations"] = [
        _rule(
            "!(has(self.schedule) && has(self.intervalSeconds))",
            "checkpoint: set schedule or intervalSeconds, not both",
        )
    ]
    return schema


def _spec_mode() -> Schema:
    return _str(
        "PrimaryReplica: one primary, the rest replicas. ActiveActive: peers, every healthy pod serves.",
        enum=list(defaults.MODES),
        default=defaults.DEFAULT_MODE,
        **{
            "x-kubernetes-validations": [
                _rule("self == oldSelf", "mode is immutable; create a new FaultTolerantService instead")
            ]
        },
    )


def _spec_health() -> Schema:
    return _obj(
        {
            "readinessProbe": _probe_settings("readiness", defaults.DEFAULT_READINESS),
            "livenessProbe": _probe_settings("liveness", defaults.DEFAULT_LIVENESS),
            "startupProbe": _probe_settings("startup", defaults.DEFAULT_STARTUP),
            "unreadyTimeoutSeconds": _positive(
                "health.unreadyTimeoutSeconds",
                "How long a started pod may stay unready before it counts as failed and is replaced.",
                defaults.DEFAULT_UNREADY_TIMEOUT_SECONDS,
                defaults.MAX_UNREADY_TIMEOUT_SECONDS,
            ),
            "metrics": _health_metrics(),
        },
        description="Probe defaults and the operator's health judgement.",
    )


def _quantity(description: str) -> Schema:
    """CPU or memory as Kubernetes writes it (500m, 1.5, 900Mi)."""
    return _str(description, maxLength=32, pattern=defaults.QUANTITY_PATTERN)


def _threshold(resource: str, example: str) -> Schema:
    return _obj(
        {
            "above": _quantity(f"A pod using more {resource} than this (e.g. {example}) is in breach."),
            "recoverBelow": _quantity(
                "It is out of breach only below this (hysteresis); 90% of above by default."
            ),
        },
        required=["above"],
        description=f"The pod's {resource}: the sum over its containers, from metrics.k8s.io.",
    )


def _health_metrics() -> Schema:
    return _obj(
        {
            "cpu": _threshold("CPU", "800m"),
            "memory": _threshold("memory", "900Mi"),
            "forSeconds": _bounded(
                "health.metrics.forSeconds",
                "A breach counts once samples show it this long: a shorter spike changes nothing.",
                defaults.DEFAULT_BREACH_SECONDS,
                low=0,
                high=defaults.MAX_BREACH_SECONDS,
            ),
            "replaceAfterSeconds": _bounded(
                "health.metrics.replaceAfterSeconds",
                "A pod still in breach this much longer is replaced (a primary is failed over from after "
                "failover.delaySeconds, and demoted, not fenced); 0: only drained, never deleted.",
                defaults.DEFAULT_REPLACE_AFTER_SECONDS,
                low=0,
                high=defaults.MAX_BREACH_SECONDS,
            ),
            "staleAfterSeconds": _positive(
                "health.metrics.staleAfterSeconds",
                "A sample older than this judges nothing.",
                defaults.DEFAULT_STALE_AFTER_SECONDS,
                defaults.MAX_BREACH_SECONDS,
            ),
        },
        description="Health from measured CPU and memory (metrics.k8s.io, served by metrics-server): a pod in "
        "breach is Degraded and drained, then replaced, never more than disruption.maxUnavailable at once and "
        "never the last serving pod. Missing, stale or malformed metrics judge nothing.",
    )


def _spec_disruption() -> Schema:
    return _obj(
        {
            "maxUnavailable": {
                "x-kubernetes-int-or-string": True,
                "default": defaults.DEFAULT_MAX_UNAVAILABLE,
                "description": "Pods that may be down at once for voluntary disruption and rollouts.",
                "x-kubernetes-validations": [
                    _rule(
                        f"type(self) == int ? self >= 1 && self <= {defaults.MAX_REPLICAS} "
                        ": self.matches('^[0-9]{1,3}%$')",
                        f"disruption.maxUnavailable must be a count from 1 to {defaults.MAX_REPLICAS} or a "
                        "percentage such as 25%",
                    )
                ],
            },
            "metadata": object_metadata("disruption.metadata", "the PodDisruptionBudget"),
        },
    )


def _spec_spread() -> Schema:
    return _obj(
        {
            "topologyKeys": {
                "type": "array",
                "maxItems": 8,
                "items": _str(maxLength=317, minLength=1),
                "x-kubernetes-list-type": "set",
                "description": "Node label keys to spread pods over.",
                "default": list(defaults.DEFAULT_TOPOLOGY_KEYS),
            },
            "whenUnsatisfiable": _str(
                "ScheduleAnyway spreads when it can; DoNotSchedule leaves a pod pending instead.",
                enum=list(defaults.WHEN_UNSATISFIABLE),
                default=defaults.DEFAULT_WHEN_UNSATISFIABLE,
            ),
        },
    )


def _hook_path(field: str, description: str, default: str) -> Schema:
    # Only a path: the host is always the pod's own IP, never one a spec could name.
    return _str(
        description,
        default=default,
        maxLength=256,
        **{
            "x-kubernetes-validations": [
                _rule(
                    f"self.matches('{defaults.HOOK_PATH_PATTERN}')",
                    f"failover.hooks.{field} must be a path such as /promote, not a URL",
                )
            ]
        },
    )


def _failover_hooks() -> Schema:
    return _obj(
        {
            "port": _int(
                "Container port the hooks are served on.",
                **{
                    "x-kubernetes-validations": [
                        _rule(
                            "self >= 1 && self <= 65535",
                            "failover.hooks.port must be between 1 and 65535",
                        )
                    ]
                },
            ),
            "promotePath": _hook_path(
                "promotePath", "POSTed on the new primary, with the term.", defaults.HooksSpec.promote_path
            ),
            "demotePath": _hook_path(
                "demotePath",
                "POSTed on the old primary, if it still answers.",
                defaults.HooksSpec.demote_path,
            ),
            "timeoutSeconds": {"type": "number", "default": 1, "minimum": 0.1, "maximum": 30},
        },
        required=["port"],
        description="HTTP hooks that tell the workload of a promotion or demotion at once; the "
        "role and term files under /etc/ftso follow a little later.",
    )


def _failover_node_lost_after_seconds() -> Schema:
    return _int(
        "A node whose heartbeat Lease is older than this is lost: its pods are replaced and its "
        "primary failed over. Kubelets renew every 10 s, so keep it above that. Acted on no sooner than "
        "24 s (two heartbeats plus slack): nodes silenced together must all show before a partition is "
        "told from node failures.",
        default=defaults.DEFAULT_NODE_LOST_AFTER_SECONDS,
        **{
            "x-kubernetes-validations": [
                _rule(
                    f"self >= {defaults.MIN_NODE_LOST_AFTER_SECONDS}",
                    f"failover.nodeLostAfterSeconds must be at least "
                    f"{defaults.MIN_NODE_LOST_AFTER_SECONDS}: kubelets renew their Lease every 10 s",
                ),
                _rule(
                    f"self <= {defaults.MAX_NODE_LOST_AFTER_SECONDS}",
                    f"failover.nodeLostAfterSeconds must be at most {defaults.MAX_NODE_LOST_AFTER_SECONDS}",
                ),
            ]
        },
    )


def _spec_failover() -> Schema:
    return _obj(
        {
            "hooks": _failover_hooks(),
            "delaySeconds": _bounded(
                "failover.delaySeconds",
                "How long the primary may be unready before it is failed over.",
                defaults.DEFAULT_FAILOVER_DELAY_SECONDS,
                low=0,
                high=defaults.MAX_FAILOVER_DELAY_SECONDS,
            ),
            "nodeLostAfterSeconds": _failover_node_lost_after_seconds(),
            "maxPerHour": _positive(
                "failover.maxPerHour",
                "Failovers allowed in any hour; more wait (anti-flapping).",
                defaults.DEFAULT_FAILOVER_MAX_PER_HOUR,
                defaults.MAX_FAILOVERS_PER_HOUR,
            ),
            "minIntervalSeconds": _bounded(
                "failover.minIntervalSeconds",
                "Least time between two failovers.",
                defaults.DEFAULT_FAILOVER_MIN_INTERVAL_SECONDS,
                low=0,
                high=defaults.MAX_FAILOVER_MIN_INTERVAL_SECONDS,
            ),
        },
        description="When and how often the primary is replaced (PrimaryReplica mode).",
    )


_DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _gateway_ref() -> Schema:
    return _obj(
        {
            "name": _str("The Gateway's name.", minLength=1, maxLength=253),
            "namespace": _str(
                "Its namespace; the resource's own by default.", maxLength=63, pattern=_DNS_LABEL
            ),
            "sectionName": _str("One listener of the Gateway; all of them by default.", maxLength=253),
        },
        required=["name"],
        description="The Gateway the HTTPRoute <name> attaches to (Gateway API, gateway.networking.k8s.io/v1).",
    )


def _follow_load() -> Schema:
    return _obj(
        {
            "cpuCapacity": _quantity(
                "The CPU (e.g. 1, 500m) at which a pod is down to the floor; idle, it has its full weight."
            ),
            "floorPercent": _bounded(
                "traffic.weights.followLoad.floorPercent",
                "The least share of its full weight a serving pod keeps.",
                defaults.DEFAULT_FLOOR_PERCENT,
                low=0,
                high=100,
            ),
            "maxStepPercent": _positive(
                "traffic.weights.followLoad.maxStepPercent",
                "The most a weight moves per new sample, in percent of its full weight: no oscillation.",
                defaults.DEFAULT_MAX_STEP_PERCENT,
                100,
            ),
        },
        required=["cpuCapacity"],
        description="Weights that follow each pod's measured CPU (metrics.k8s.io): the busier, the less traffic.",
    )


def _traffic_weights() -> Schema:
    return _obj(
        {
            "primary": _bounded(
                "traffic.weights.primary",
                "The primary's share, relative to the other pods' (policy Weighted).",
                defaults.DEFAULT_WEIGHT,
                low=0,
                high=defaults.MAX_WEIGHT,
            ),
            "replica": _bounded(
                "traffic.weights.replica",
                "Each replica's share. A pod's annotation ftso.dev/weight (0 to 1000) replaces its role's.",
                defaults.DEFAULT_WEIGHT,
                low=0,
                high=defaults.MAX_WEIGHT,
            ),
            "slowStartSeconds": _bounded(
                "traffic.weights.slowStartSeconds",
                "A pod that turns Healthy ramps up to its weight over this long (0: at once).",
                0,
                low=0,
                high=defaults.MAX_SLOW_START_SECONDS,
            ),
            "followLoad": _follow_load(),
        },
        description="Weights of the pods under policy Weighted. A pod that is not Healthy has weight 0.",
    )


def _spec_traffic() -> Schema:
    schema = _obj(
        {
            "policy": _str(
                "Random: the plain Services (kube-proxy picks an endpoint at random in iptables and "
                "nftables mode). RoundRobin and Weighted: the HTTPRoute <name> on gatewayRef.",
                enum=list(defaults.TRAFFIC_POLICIES),
                default=names.POLICY_RANDOM,
            ),
            "gatewayRef": _gateway_ref(),
            "provider": _str(
                "The Gateway implementation whose policy object carries the algorithm (Random, "
                "RoundRobin): Auto finds it from the installed CRDs; None renders the HTTPRoute only.",
                enum=list(defaults.TRAFFIC_PROVIDERS),
                default=names.PROVIDER_AUTO,
            ),
            "weights": _traffic_weights(),
            "sessionAffinity": _obj(
                {
                    "clientIPTimeoutSeconds": _positive(
                        "traffic.sessionAffinity.clientIPTimeoutSeconds",
                        "How long a client's address sticks to one pod.",
                        10800,
                        defaults.MAX_AFFINITY_SECONDS,
                    )
                },
                description="ClientIP session affinity on the Services <name> and <name>-replicas.",
            ),
            "distribution": _str(
                "The Services' trafficDistribution: prefer endpoints in the client's zone or on its node.",
                enum=list(defaults.TRAFFIC_DISTRIBUTIONS),
            ),
        },
        description="How traffic is spread over the pods.",
    )
    schema["x-kubernetes-validations"] = [
        _rule(
            "self.policy == 'Random' || has(self.gatewayRef)",
            "traffic.policy RoundRobin and Weighted need traffic.gatewayRef: kube-proxy can only "
            "pick endpoints at random",
        )
    ]
    return schema


def build_spec_schema() -> Schema:
    return _obj(
        {
            "replicas": _int(
                "Number of pods.",
                default=defaults.DEFAULT_REPLICAS,
                **{
                    "x-kubernetes-validations": [
                        _rule("self >= 0", "replicas must be 0 or more"),
                        _rule(
                            f"self <= {defaults.MAX_REPLICAS}",
                            f"replicas must be at most {defaults.MAX_REPLICAS}",
                        ),
                    ]
                },
            ),
            "mode": _spec_mode(),
            "template": _template(),
            "health": _spec_health(),
            "service": _service(),
            "disruption": _spec_disruption(),
            "spread": _spec_spread(),
            "failover": _spec_failover(),
            "checkpoint": _checkpoint(),
            "traffic": _spec_traffic(),
            "restore": _obj(
                {
                    "checkpoint": _str(
                        "'latest' or a checkpoint id: new and replaced pods load it through "
                        "checkpoint.restoreTemplate before they start.",
                        minLength=1,
                        maxLength=63,
                    )
                },
                required=["checkpoint"],
            ),
            "paused": {
                "type": "boolean",
                "default": False,
                "description": "Stops every decision and action; status is still reported.",
            },
        },
        required=["template"],
        **{
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.traffic) || self.traffic.policy != 'Weighted' || !has(self.traffic.gatewayRef)"
                    f" || !has(self.replicas) || self.replicas <= {defaults.MAX_WEIGHTED_REPLICAS}",
                    f"traffic.policy Weighted gives each pod its own backendRef, and a Gateway API rule holds "
                    f"{defaults.MAX_WEIGHTED_REPLICAS}: at most {defaults.MAX_WEIGHTED_REPLICAS} replicas",
                )
            ]
        },
    )


def _condition() -> Schema:
    return _obj(
        {
            "type": _str(maxLength=316),
            "status": _str(enum=["True", "False", "Unknown"]),
            "observedGeneration": _int(format="int64", minimum=0),
            "lastTransitionTime": _str(format="date-time"),
            "reason": _str(maxLength=1024),
            "message": _str(maxLength=32768),
        },
        required=["type", "status", "lastTransitionTime", "reason", "message"],
    )


def _status_failovers() -> Schema:
    return {
        "type": "array",
        "description": f"The last {defaults.FAILOVER_HISTORY_LIMIT} changes of primary, oldest first.",
        "x-kubernetes-list-type": "atomic",
        "items": _obj(
            {
                "term": _int(format="int64"),
                "kind": _str("Failover or Switchover."),
                "reason": _str(),
                "from": _str(),
                "to": _str(),
                "detectedAt": _str(format="date-time"),
                "decidedAt": _str(format="date-time"),
                "routedAt": _str("When <name>-primary routed to the new primary.", format="date-time"),
                "fenceUid": _str(
                    "UID of the failed primary: while it exists it is fenced (out of every Service) "
                    "and deleted, by whichever reconcile comes next."
                ),
                "fencedAt": _str("When the fenced pod was seen gone.", format="date-time"),
                "hooksCalledAt": _str(
                    "When the promote and demote hooks of this change were called (failover.hooks).",
                    format="date-time",
                ),
            },
            required=["term", "kind", "to"],
        ),
    }


def _status_failover_times() -> Schema:
    return {
        "type": "array",
        "description": "When the unplanned failovers failover.maxPerHour and minIntervalSeconds count "
        "were decided, oldest first: those of the last hour (or minIntervalSeconds), at most maxPerHour. "
        "Kept apart from failovers, whose bound would otherwise let the limit undercount.",
        "maxItems": defaults.MAX_FAILOVERS_PER_HOUR,
        "items": _str(format="date-time"),
        "x-kubernetes-list-type": "atomic",
    }


def _status_unreachable_pods() -> Schema:
    return {
        "type": "array",
        "description": "Pods seen on an unreachable node (NotReady or silent), kept after their API "
        "object is gone until the node is gone, tainted node.kubernetes.io/out-of-service, or trusted "
        "again: their process may still run there, so no new pod takes the name, the fence of a "
        "failed primary among them is not done, and no recovery from a checkpoint starts.",
        "maxItems": 2 * defaults.MAX_REPLICAS,
        "items": _obj(
            {
                "name": _str(),
                "uid": _str(),
                "node": _str(),
                "since": _str("When it was first seen on the unreachable node.", format="date-time"),
            },
            required=["name", "uid", "node", "since"],
        ),
        "x-kubernetes-list-type": "atomic",
    }


def _status_checkpoints() -> Schema:
    return {
        "type": "array",
        "description": f"The last {defaults.CHECKPOINT_HISTORY_LIMIT} checkpoints, oldest first.",
        "x-kubernetes-list-type": "atomic",
        "items": _obj(
            {
                "id": _str(),
                "job": _str(),
                "result": _str("Running, Succeeded or Failed."),
                "reason": _str(),
                "sourcePod": _str(),
                "term": _int(format="int64"),
                "startedAt": _str(format="date-time"),
                "finishedAt": _str(format="date-time"),
                "durationSeconds": _int(),
            },
            required=["id", "result"],
        ),
    }


def _status_pod() -> Schema:
    return _obj(
        {
            "name": _str(),
            "node": _str(),
            "zone": _str(),
            "role": _str(),
            "health": _str("Healthy, Starting, Degraded, Failed, Lost or Terminating."),
            "serving": {"type": "boolean"},
            "since": _str("When the pod entered its current health.", format="date-time"),
            "reason": _str(),
            "updated": {"type": "boolean", "description": "Runs the current template."},
            "restoredFrom": _str("The checkpoint the pod was restored from."),
            "weight": _int("Its weight in the HTTPRoute <name> (traffic.policy Weighted)."),
            "loadSampledAt": _str(
                "The usage sample its weight last moved on (traffic.weights.followLoad).", format="date-time"
            ),
            "breachSince": _str(
                "When its measured usage went over a health.metrics threshold, while it stays over; moved on "
                "by any gap in the samples longer than staleAfterSeconds, which does not count.",
                format="date-time",
            ),
            "breachSampledAt": _str("The newest usage sample of its breach.", format="date-time"),
        },
        required=["name", "health"],
    )


def build_status_schema() -> Schema:
    pod = _status_pod()
    return _obj(
        {
            "observedGeneration": _int(format="int64"),
            "phase": _str("Pending, Ready, Degraded, Updating, Unavailable, Paused or Invalid."),
            "replicas": _int("Pods that exist and are not terminating."),
            "readyReplicas": _int("Pods Ready in Kubernetes' sense."),
            "servingReplicas": _int("Pods the operator judges healthy and routes traffic to."),
            "updatedReplicas": _int("Pods running the current template."),
            "selector": _str("Label selector of the pods, for the scale subresource."),
            "primary": _str("Name of the primary pod (PrimaryReplica mode)."),
            "term": _int("Fencing token: increases with every promotion, never decreases.", format="int64"),
            "pods": {"type": "array", "items": pod, "x-kubernetes-list-type": "atomic"},
            "failovers": _status_failovers(),
            "failoverTimes": _status_failover_times(),
            "unreachablePods": _status_unreachable_pods(),
            "checkpoints": _status_checkpoints(),
            "lastSuccessfulCheckpoint": _str("Id of the newest successful checkpoint."),
            "checkpointSchedule": _obj(
                {
                    "lastScheduleTime": _str(format="date-time"),
                    "lastRequest": _str(f"The {names.ANNOTATION_CHECKPOINT} annotation value last answered."),
                }
            ),
            "recovery": _obj(
                {
                    "checkpoint": _str(),
                    "startedAt": _str(format="date-time"),
                    "completedAt": _str(format="date-time"),
                    "dataLossWindowSeconds": _int("Age of the checkpoint used: what may have been lost."),
                },
                description="The last automatic recovery from a checkpoint, after every pod was lost.",
            ),
            "switchover": _obj(
                {
                    "request": _str(f"The {names.ANNOTATION_SWITCHOVER} annotation value this answers."),
                    "result": _str("Completed or Refused."),
                    "message": _str(),
                    "at": _str(format="date-time"),
                },
                description="The answer to the last switchover request.",
            ),
            "conditions": {
                "type": "array",
                "items": _condition(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        }
    )


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": names.CRD_NAME,
            "labels": {"app.kubernetes.io/name": "ftso", "app.kubernetes.io/part-of": "ftso"},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": [names.SHORT_NAME],
                "categories": ["all", "ftso"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
                        {"name": "Serving", "type": "integer", "jsonPath": ".status.servingReplicas"},
                        {"name": "Primary", "type": "string", "jsonPath": ".status.primary"},
                        {"name": "Term", "type": "integer", "jsonPath": ".status.term", "priority": 1},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {
                            "name": "Failure",
                            "type": "string",
                            "description": "What the API server refused to create, in its words.",
                            "jsonPath": '.status.conditions[?(@.type=="'
                            + names.ConditionType.REPLICA_FAILURE
                            + '")].message',
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": _obj(
                            {
                                "apiVersion": _str(),
                                "kind": _str(),
                                "metadata": {"type": "object"},
                                "spec": build_spec_schema(),
                                "status": build_status_schema(),
                            },
                            required=["spec"],
                            description="FaultTolerantService keeps N replicas of a service healthy, "
                            "fails over between them and routes traffic by role.",
                            **{
                                "x-kubernetes-validations": [
                                    _rule(
                                        f"self.metadata.name.size() <= {defaults.MAX_NAME_LENGTH}",
                                        f"metadata.name must be at most {defaults.MAX_NAME_LENGTH} "
                                        "characters: pods are named <name>-<ordinal> and Services "
                                        "<name>-replicas",
                                    )
                                ]
                            },
                        )
                    },
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    header = "# Generated by `ftso crd` from operator/ftso/api/crd.py; do not edit (make crd).\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
