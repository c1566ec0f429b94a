"""The operator's own judgement of each pod's health, a pure function of the pod, its node and the time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ftso.api.spec import HealthSpec
from ftso.model import NodeView, PodView
from ftso.names import Health, Reason
from ftso.settings import OperatorSettings


@dataclass(frozen=True)
class Verdict:
    health: Health
    reason: str = ""
    # When a Starting or Degraded pod will count as Failed unless it turns Ready: the next look is due then.
    deadline: datetime | None = None
    # Set when measured usage, not a probe, judged the pod (health.metrics): since when it is so.
    breached_at: datetime | None = None
    # Failed only for staying unready: its containers run, and it may turn Ready again (a soft failure).
    unready: bool = False

    @property
    def gone(self) -> bool:
        """The pod cannot serve again and must be replaced."""
        return self.health in (Health.FAILED, Health.LOST, Health.TERMINATING)


def startup_budget(health: HealthSpec) -> timedelta:
    probe = health.startup
    return timedelta(
        seconds=probe.initial_delay_seconds
        + probe.period_seconds * probe.failure_threshold
        + health.unready_timeout_seconds
    )


def node_problem(node: NodeView | None, name: str, now: datetime, lost_after_seconds: float) -> str:
    """Why a node cannot be trusted with a pod, or empty: deleted for a while, NotReady, or its heartbeat
    Lease stale. A node the view never held is unknown, not lost (the node watch may lag the pod watch, a
    node may join between a relist's LISTs): its pods are judged by their own state."""
    if node is None:
        return ""
    if node.deleted_at is not None:
        gone = (now - node.deleted_at).total_seconds()
        return f"node {name} was deleted {gone:.0f}s ago" if gone > lost_after_seconds else ""
    if not node.ready:
        return f"node {name} is NotReady"
    if node.lease_renewed_at is not None:
        age = (now - node.lease_renewed_at).total_seconds()
        if age > lost_after_seconds:
            return f"node {name} heartbeat is {age:.0f}s old (lost after {lost_after_seconds}s)"
    return ""


def proven_stopped(node: NodeView | None) -> bool:
    """The pods of this node are known not to run: its object is gone (deleted, or no longer in a view that
    held it), or it is tainted out-of-service."""
    return node is None or node.deleted_at is not None or node.out_of_service


def unreachable(node: NodeView | None, name: str, now: datetime, lost_after_seconds: float) -> bool:
    """Its pods may still run where nobody can see or stop them: NotReady or silent, not proven stopped."""
    return not proven_stopped(node) and bool(node_problem(node, name, now, lost_after_seconds))


def has_been_ready(pod: PodView) -> bool:
    """Ready now, or once since it started (a NotReady node's pods are marked unready afterwards)."""
    if pod.ready:
        return True
    return pod.ready_changed_at is not None and (
        pod.started_at is None or pod.ready_changed_at > pod.started_at
    )


# A kubelet renews its node Lease every 10 s (a quarter of the Lease's 40 s duration); a renewal may come this
# much late without the node being silent.
NODE_HEARTBEAT_INTERVAL_SECONDS = 10.0
NODE_HEARTBEAT_SLACK_SECONDS = 2.0
NODE_SILENT_AFTER_SECONDS = NODE_HEARTBEAT_INTERVAL_SECONDS + NODE_HEARTBEAT_SLACK_SECONDS


def node_loss_confirmed_after(lost_after_seconds: int) -> float:
    """When a silent node's loss is acted on. Nodes silenced together (a partition of the operator's view)
    renew out of phase, so they cross any one age up to a heartbeat interval apart. Acted on sooner, the first
    of them would lose its pods before the rest showed that too much is silent at once; by this age every node
    silenced with it has missed a renewal, and the share that decides a hold counts it."""
    interval, slack = NODE_HEARTBEAT_INTERVAL_SECONDS, NODE_HEARTBEAT_SLACK_SECONDS
    return max(float(lost_after_seconds), 2 * interval + 2 * slack)


@dataclass(frozen=True)
class NodeLossHold:
    """Why node loss must not be acted on now (no deletions, no failovers for it)."""

    reason: Reason  # HeartbeatsInDoubt or PartitionSuspected
    message: str


def node_loss_held(
    nodes: Mapping[str, NodeView],
    now: datetime,
    lost_after_seconds: float,
    *,
    max_lost_share: float = OperatorSettings.max_lost_node_share,
    view_in_doubt: str = "",
) -> NodeLossHold | None:
    """Hold node loss when the view is in doubt, or when a node is lost while too many are silent at once:
    lost ones, and those that missed a renewal and will be lost soon."""
    if view_in_doubt:
        return NodeLossHold(Reason.HEARTBEATS_IN_DOUBT, view_in_doubt)
    if not any(node_problem(n, n.name, now, lost_after_seconds) for n in nodes.values()):
        return None
    silent = sum(1 for n in nodes.values() if node_problem(n, n.name, now, NODE_SILENT_AFTER_SECONDS))
    if silent == len(nodes) or silent / len(nodes) > max_lost_share:
        return NodeLossHold(
            Reason.PARTITION_SUSPECTED,
            f"{silent} of {len(nodes)} nodes look lost or silent at once (more than {max_lost_share:.0%}): "
            "more likely the operator's view than the nodes; node loss is held until heartbeats return",
        )
    return None


def judge_pod(
    pod: PodView,
    nodes: Mapping[str, NodeView],
    health: HealthSpec,
    now: datetime,
    node_lost_after_seconds: float = 20,
    *,
    trust_nodes: bool = True,
) -> Verdict:
    if pod.deleting:
        return Verdict(Health.TERMINATING, "pod is being deleted")
    node = nodes.get(pod.node_name)
    if pod.node_name and trust_nodes:
        problem = node_problem(node, pod.node_name, now, node_lost_after_seconds)
        if problem:
            return Verdict(Health.LOST, problem)
    verdict = _judge_own_state(pod, health, now)
    if node is not None and node.deleted_at is not None:
        # Its node's deletion is confirmed at this time: the next look is due then.
        confirmed = node.deleted_at + timedelta(seconds=node_lost_after_seconds)
        verdict = replace(verdict, deadline=min(verdict.deadline or confirmed, confirmed))
    return verdict


def _judge_own_state(pod: PodView, health: HealthSpec, now: datetime) -> Verdict:
    if pod.phase in ("Failed", "Succeeded"):
        return Verdict(Health.FAILED, f"pod phase is {pod.phase}")
    if pod.container_failure:
        return Verdict(Health.FAILED, pod.container_failure)
    if pod.phase == "Running" and pod.ready:
        return Verdict(Health.HEALTHY)
    if pod.phase != "Running":
        return Verdict(Health.STARTING, "pod is " + ("not scheduled" if not pod.node_name else pod.phase))
    # Whether it ever was Ready compares two of the kubelet's own stamps; how long compares with our clock, so
    # the durations run from when the operator saw the pod start or turn unready.
    if not has_been_ready(pod):
        since = pod.started_seen_at or now
        deadline = since + startup_budget(health)
        if now >= deadline:
            return Verdict(Health.FAILED, "pod never became Ready")
        return Verdict(Health.STARTING, "pod is not Ready yet", deadline)
    deadline = (pod.ready_seen_at or now) + timedelta(seconds=health.unready_timeout_seconds)
    if now >= deadline:
        return Verdict(
            Health.FAILED, f"pod not Ready for over {health.unready_timeout_seconds}s", unready=True
        )
    return Verdict(Health.DEGRADED, "pod is not Ready", deadline)
