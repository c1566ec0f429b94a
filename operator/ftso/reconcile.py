"""The pure heart of the operator: observed state in, a plan of actions and the new status out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ftso import conditions as cond
from ftso import names
from ftso.api.spec import (
    FAILOVER_HISTORY_LIMIT,
    FtsSpec,
    operator_judged_problems,
    parse_spec,
    resolve_max_unavailable,
)
from ftso.builders import (
    ANNOTATION_RESTORED_FROM,
    Owner,
    build_checkpoint_job,
    build_pdb,
    build_pod,
    build_services,
    drifted,
    template_hash,
)
from ftso.checkpoints import (
    CHECKPOINT_ANNOTATION,
    CheckpointPlan,
    JobView,
    decide_checkpoints,
    restore_source,
)
from ftso.health import (
    DEFAULT_MAX_LOST_NODE_SHARE,
    Health,
    NodeLossHold,
    Verdict,
    judge_pod,
    node_loss_held,
    node_problem,
)
from ftso.hooks import HookCall
from ftso.model import NodeView, PodView, format_time, parse_time
from ftso.roles import PLANNED, RoleDecision, decide_primary


@dataclass(frozen=True)
class FtsView:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    annotations: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True)
class Observed:
    fts: FtsView
    pods: tuple[PodView, ...]
    nodes: Mapping[str, NodeView]
    services: Mapping[str, Mapping[str, Any]]
    pdb: Mapping[str, Any] | None
    now: datetime
    # Ready addresses of <name>-primary's EndpointSlices: when they hold exactly the new primary, it is routed.
    primary_endpoints: frozenset[str] = frozenset()
    jobs: tuple[JobView, ...] = ()
    # Set when the operator's own view of the nodes cannot be trusted (its heartbeat watch went silent).
    node_view_in_doubt: str = ""
    max_lost_node_share: float = DEFAULT_MAX_LOST_NODE_SHARE


@dataclass(frozen=True)
class PodDelete:
    name: str
    uid: str
    force: bool
    reason: str


@dataclass(frozen=True)
class PodPatch:
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: dict[str, Any]
    write_status: bool = False
    # A new term is written with the resource's resourceVersion as precondition: two writers cannot both win.
    guard_status: bool = False
    patches: list[PodPatch] = field(default_factory=list)
    deletes: list[PodDelete] = field(default_factory=list)
    creates: list[dict[str, Any]] = field(default_factory=list)
    owned_creates: list[dict[str, Any]] = field(default_factory=list)  # Services and the PDB, when missing
    applies: list[dict[str, Any]] = field(default_factory=list)  # ... and when someone changed them
    events: list[EventSpec] = field(default_factory=list)
    hooks: list[HookCall] = field(default_factory=list)  # after the labels moved
    job_creates: list[dict[str, Any]] = field(default_factory=list)
    job_deletes: list[str] = field(default_factory=list)
    requeue_after: float | None = None
    promotion: str = ""  # why a new primary was chosen, when one was

    @property
    def acts(self) -> bool:
        return bool(
            self.patches
            or self.deletes
            or self.creates
            or self.owned_creates
            or self.applies
            or self.job_creates
            or self.job_deletes
        )


SWITCHOVER_ANNOTATION = names.PREFIX + "switchover"
PROGRESS_RECHECK_SECONDS = 5


def _role_events(decision: RoleDecision) -> list[EventSpec]:
    if decision.reason == "Elected":
        return [
            EventSpec("Normal", "BecamePrimary", f"{decision.primary} became primary (term {decision.term})")
        ]
    if decision.reason == "Lost":
        return [
            EventSpec(
                "Warning",
                "PrimaryUnavailable",
                f"primary {decision.previous} failed ({decision.detail}) and no healthy replica can take over",
            )
        ]
    events: list[EventSpec] = []
    if decision.throttled:
        events.append(
            EventSpec(
                "Warning",
                "FailoverThrottled",
                f"primary {decision.previous or '-'} needs a failover: {decision.throttled}",
            )
        )
    if decision.switchover is not None and decision.switchover["result"] == "Refused":
        events.append(EventSpec("Warning", "SwitchoverRefused", decision.switchover["message"]))
    if decision.reason == "Failover":
        events.append(
            EventSpec(
                "Warning",
                "FailoverStarted",
                f"{decision.previous or 'no primary'} failed ({decision.detail or 'gone'}); promoting {decision.primary} "
                f"(term {decision.term})",
            )
        )
    elif decision.reason:
        events.append(
            EventSpec(
                "Normal",
                "SwitchoverStarted",
                f"promoting {decision.primary} in place of {decision.previous} (term {decision.term}, {decision.reason})",
            )
        )
    return events


def _mark_routed(
    history: list[dict[str, Any]], primary: str, pod_ip: str, endpoints: frozenset[str], now: str
) -> EventSpec | None:
    """Fill routedAt of the newest change of primary once <name>-primary routes to exactly the new primary."""
    if not history or history[-1].get("routedAt") or history[-1].get("to") != primary:
        return None
    if not pod_ip or endpoints != {pod_ip}:
        return None
    last = history[-1]
    last["routedAt"] = now
    reason = "FailoverCompleted" if last.get("kind") == "Failover" else "SwitchoverCompleted"
    return EventSpec(
        "Normal",
        reason,
        f"{primary} is primary and routed (term {last.get('term')}, from {last.get('from') or '-'})",
    )


def _hook_calls(
    spec: FtsSpec, decision: RoleDecision, pods: Mapping[str, PodView], verdicts: Mapping[str, Verdict]
) -> list[HookCall]:
    hooks = spec.failover.hooks
    if hooks is None or not decision.promoted:
        return []
    calls = []
    new = pods.get(decision.primary)
    if new is not None and new.pod_ip:
        calls.append(
            HookCall(
                new.name,
                f"http://{new.pod_ip}:{hooks.port}{hooks.promote_path}",
                names.ROLE_PRIMARY,
                decision.term,
                hooks.timeout_seconds,
            )
        )
    old = pods.get(decision.previous) if decision.previous else None
    if old is not None and old.pod_ip and verdicts[old.name].health != Health.LOST:
        role = names.ROLE_REPLICA if decision.reason in PLANNED else names.ROLE_FENCED
        calls.append(
            HookCall(
                old.name,
                f"http://{old.pod_ip}:{hooks.port}{hooks.demote_path}",
                role,
                decision.term,
                hooks.timeout_seconds,
            )
        )
    return calls


def _recovery(
    spec: FtsSpec,
    previous: Mapping[str, Any],
    checkpoints: CheckpointPlan,
    decision: RoleDecision,
    pods: tuple[PodView, ...],
    verdicts: Mapping[str, Verdict],
    *,
    now: datetime,
    acting: bool,
    events: list[EventSpec],
) -> dict[str, Any]:
    """The last rung: every pod lost and no replica to promote. New pods load the latest good checkpoint and
    one of them becomes primary with a new term; the age of that checkpoint is what may have been lost."""
    recovery = dict(previous.get("recovery") or {})
    active = bool(recovery.get("checkpoint")) and not recovery.get("completedAt")
    if active and decision.promoted:
        recovery["completedAt"] = format_time(now)
        events.append(
            EventSpec(
                "Normal",
                "RecoveredFromCheckpoint",
                f"{decision.primary} is primary (term {decision.term}), restored from checkpoint "
                f"{recovery['checkpoint']}; data-loss window {recovery.get('dataLossWindowSeconds')}s",
            )
        )
        return recovery
    if active or not acting or not spec.primary_replica or decision.primary or decision.term == 0:
        return recovery
    if spec.checkpoint is None or spec.checkpoint.restore_template is None or not checkpoints.last_successful:
        return recovery
    if any(verdicts[p.name].health in (Health.HEALTHY, Health.STARTING, Health.DEGRADED) for p in pods):
        return recovery  # someone may still come back with the data
    entry = next((e for e in checkpoints.history if e.get("id") == checkpoints.last_successful), {})
    finished = parse_time(entry.get("finishedAt")) or now
    window = max(0, int((now - finished).total_seconds()))
    events.append(
        EventSpec(
            "Warning",
            "RecoveryStarted",
            f"every pod is lost: recreating them from checkpoint {checkpoints.last_successful} "
            f"(data-loss window {window}s)",
        )
    )
    return {
        "checkpoint": checkpoints.last_successful,
        "startedAt": format_time(now),
        "dataLossWindowSeconds": window,
    }


def pending_fences(history: list[dict[str, Any]]) -> dict[str, str]:
    """Pod name -> uid of every failed-over primary not yet known gone: the fence lives in status, so a
    reconcile that died after deciding a failover cannot let the old primary come back as a replica."""
    return {
        str(h["from"]): str(h["fenceUid"])
        for h in history
        if h.get("kind") == "Failover" and h.get("fenceUid") and not h.get("fencedAt")
    }


def _mark_fenced(history: list[dict[str, Any]], pods: tuple[PodView, ...], now: str) -> None:
    """A fence is done once the pod it names (by uid) is gone from the API."""
    uids = {p.uid for p in pods}
    for record in history:
        if record.get("fenceUid") and not record.get("fencedAt") and record["fenceUid"] not in uids:
            record["fencedAt"] = now


def _node_loss_condition(
    held: NodeLossHold | None, previous: Mapping[str, Any], events: list[EventSpec]
) -> cond.Condition:
    was_held = cond.is_true(previous.get("conditions") or [], cond.NODE_LOSS_SUSPENDED)
    if held is not None and not was_held:
        events.append(EventSpec("Warning", "NodeLossSuspended", held.message))
    elif was_held and held is None:
        events.append(EventSpec("Normal", "NodeLossResumed", "node heartbeats are trusted again"))
    if held is None:
        return cond.Condition(cond.NODE_LOSS_SUSPENDED, False, "NodesTrusted")
    return cond.Condition(cond.NODE_LOSS_SUSPENDED, True, held.reason, held.message)


def _canonical(status: Mapping[str, Any]) -> str:
    return json.dumps(status, sort_keys=True, default=str)


def desired_role(
    pod: PodView,
    verdict: Verdict,
    *,
    spec: FtsSpec,
    primary: str,
    fence: str = "",
    fences: Mapping[str, str] | None = None,
) -> str:
    if not spec.primary_replica:
        return names.ROLE_REPLICA
    if pod.name == primary:
        return names.ROLE_PRIMARY
    if (
        pod.role == names.ROLE_FENCED
        or pod.name == fence
        or (fences or {}).get(pod.name) == pod.uid
        or (pod.role == names.ROLE_PRIMARY and verdict.gone)
    ):
        return names.ROLE_FENCED  # a failed former primary: out of every Service until it is gone
    return names.ROLE_REPLICA


def _pod_patches(
    pods: tuple[PodView, ...], roles: Mapping[str, str], serving: Mapping[str, bool], term: int
) -> list[PodPatch]:
    demotions: list[PodPatch] = []
    others: list[PodPatch] = []
    for pod in pods:
        labels = {
            names.LABEL_ROLE: roles[pod.name],
            names.LABEL_SERVING: "true" if serving[pod.name] else "false",
        }
        annotations = {names.ANNOTATION_TERM: str(term)}
        if all(pod.labels.get(k) == v for k, v in labels.items()) and all(
            pod.annotations.get(k) == v for k, v in annotations.items()
        ):
            continue
        patch = PodPatch(pod.name, labels, annotations)
        # Whoever stops serving or stops being primary moves first, so two primaries never serve at once.
        if pod.labels.get(names.LABEL_ROLE) == names.ROLE_PRIMARY or not serving[pod.name]:
            demotions.append(patch)
        else:
            others.append(patch)
    return demotions + others


def _status_pods(
    pods: tuple[PodView, ...],
    verdicts: Mapping[str, Verdict],
    roles: Mapping[str, str],
    serving: Mapping[str, bool],
    nodes: Mapping[str, NodeView],
    desired_hash: str,
    previous: list[Mapping[str, Any]],
    now: str,
) -> list[dict[str, Any]]:
    before = {p.get("name"): p for p in previous}
    entries: list[dict[str, Any]] = []
    for pod in sorted(pods, key=lambda p: (p.ordinal, p.name)):
        verdict = verdicts[pod.name]
        old = before.get(pod.name) or {}
        node = nodes.get(pod.node_name)
        entry: dict[str, Any] = {
            "name": pod.name,
            "node": pod.node_name,
            "zone": node.zone if node else "",
            "role": roles[pod.name],
            "health": verdict.health.value,
            "serving": serving[pod.name],
            "since": old.get("since", now) if old.get("health") == verdict.health.value else now,
            "reason": verdict.reason,
            "updated": pod.template_hash == desired_hash,
        }
        if pod.annotations.get(ANNOTATION_RESTORED_FROM):
            entry["restoredFrom"] = pod.annotations[ANNOTATION_RESTORED_FROM]
        entries.append(entry)
    return entries


def decide(observed: Observed) -> Plan:
    fts = observed.fts
    spec = parse_spec(fts.spec)
    owner = Owner(fts.name, fts.namespace, fts.uid)
    now = format_time(observed.now)
    previous = fts.status
    term = int(previous.get("term") or 0)
    primary = str(previous.get("primary") or "")
    pods = observed.pods
    by_name = {p.name: p for p in pods}
    held = node_loss_held(
        observed.nodes,
        observed.now,
        spec.failover.node_lost_after_seconds,
        max_lost_share=observed.max_lost_node_share,
        view_in_doubt=observed.node_view_in_doubt,
    )
    verdicts = {
        p.name: judge_pod(
            p,
            observed.nodes,
            spec.health,
            observed.now,
            spec.failover.node_lost_after_seconds,
            trust_nodes=held is None,
        )
        for p in pods
    }
    history = [dict(h) for h in previous.get("failovers") or []]
    switchover_answer = dict(previous.get("switchover") or {})
    desired_hash = template_hash(spec)
    updated = {p.name: p.template_hash == desired_hash for p in pods}
    problems = operator_judged_problems(spec)
    events: list[EventSpec] = []
    acting = not spec.paused and not problems

    in_range = [p for p in pods if 0 <= p.ordinal < spec.replicas and not p.deleting]
    healthy_in_range = [p for p in in_range if verdicts[p.name].health == Health.HEALTHY]
    outdated = [p for p in in_range if not updated[p.name]]
    budget = resolve_max_unavailable(spec.max_unavailable, spec.replicas)
    all_present = len(in_range) == spec.replicas
    rollout_ready = (
        all_present
        and bool(outdated)
        and spec.replicas - len(healthy_in_range) < budget
        and all(verdicts[p.name].health == Health.HEALTHY for p in in_range)
    )
    rollout_wants_primary = rollout_ready and all(p.name == primary for p in outdated) and spec.replicas > 1

    decision = RoleDecision(primary, term)
    if acting and spec.primary_replica:
        decision = decide_primary(
            primary=primary,
            term=term,
            pods=by_name,
            verdicts=verdicts,
            replicas=spec.replicas,
            updated=updated,
            rollout_wants_primary=rollout_wants_primary,
            failover=spec.failover,
            history=history,
            now=observed.now,
            switchover_request=fts.annotations.get(SWITCHOVER_ANNOTATION, ""),
            switchover_answered=str(switchover_answer.get("request") or ""),
        )
        was_throttled = any(
            c.get("type") == cond.FAILING_OVER and c.get("reason") == "Throttled"
            for c in previous.get("conditions") or []
        )
        events.extend(
            e for e in _role_events(decision) if not (was_throttled and e.reason == "FailoverThrottled")
        )
        if decision.switchover is not None:
            switchover_answer = decision.switchover
        if decision.promoted and decision.reason != "Elected":
            history.append(
                {
                    "term": decision.term,
                    "kind": "Switchover" if decision.reason in PLANNED else "Failover",
                    "reason": decision.reason + (f": {decision.detail}" if decision.detail else ""),
                    "from": decision.previous,
                    **(
                        {"fenceUid": by_name[decision.previous].uid}
                        if decision.reason == "Failover" and decision.previous in by_name
                        else {}
                    ),
                    "to": decision.primary,
                    "detectedAt": format_time(decision.detected_at or observed.now),
                    "decidedAt": now,
                }
            )
            history = history[-FAILOVER_HISTORY_LIMIT:]
    primary, term = decision.primary, decision.term

    checkpoint_plan = decide_checkpoints(
        spec,
        name=fts.name,
        created_at=fts.created_at or observed.now,
        request=fts.annotations.get(CHECKPOINT_ANNOTATION, ""),
        previous=previous,
        jobs=observed.jobs,
        pods=[p for p in pods if not p.deleting],
        verdicts=verdicts,
        primary=primary,
        term=term,
        now=observed.now,
        acting=acting,
    )
    events.extend(EventSpec(*e) for e in checkpoint_plan.events)
    recovery = _recovery(
        spec,
        previous,
        checkpoint_plan,
        decision,
        pods,
        verdicts,
        now=observed.now,
        acting=acting,
        events=events,
    )
    restore_from = restore_source(spec, {"recovery": recovery}, checkpoint_plan.last_successful)

    fence = decision.previous if decision.reason in ("Failover", "Lost") else ""
    fences = pending_fences(history)
    roles = {
        p.name: desired_role(p, verdicts[p.name], spec=spec, primary=primary, fence=fence, fences=fences)
        for p in pods
    }
    if not acting:
        roles = {p.name: p.role or roles[p.name] for p in pods}  # paused or invalid: labels stay as they are
    serving = {
        p.name: verdicts[p.name].health == Health.HEALTHY and roles[p.name] != names.ROLE_FENCED for p in pods
    }
    if not acting:
        serving = {p.name: serving[p.name] and p.labels.get(names.LABEL_SERVING) == "true" for p in pods}

    plan = Plan(status={})
    progress_reason = ""
    if acting:
        plan.patches = _pod_patches(pods, roles, serving, term)
        for pod in sorted(pods, key=lambda p: -p.ordinal):
            verdict = verdicts[pod.name]
            if pod.deleting:
                continue
            if verdict.health == Health.LOST:
                plan.deletes.append(PodDelete(pod.name, pod.uid, True, verdict.reason))
                events.append(EventSpec("Warning", "PodLost", f"replacing {pod.name}: {verdict.reason}"))
                progress_reason = progress_reason or "Replacing"
            elif verdict.health == Health.FAILED:
                plan.deletes.append(PodDelete(pod.name, pod.uid, False, verdict.reason))
                events.append(EventSpec("Warning", "PodFailed", f"replacing {pod.name}: {verdict.reason}"))
                progress_reason = progress_reason or "Replacing"
            elif roles[pod.name] == names.ROLE_FENCED:
                plan.deletes.append(PodDelete(pod.name, pod.uid, False, "fenced former primary"))
                events.append(EventSpec("Normal", "Fenced", f"replacing {pod.name}: it was failed over"))
                progress_reason = progress_reason or "Replacing"
            elif not 0 <= pod.ordinal < spec.replicas and pod.name != primary:
                plan.deletes.append(PodDelete(pod.name, pod.uid, False, "scaled down"))
                events.append(
                    EventSpec("Normal", "ScaledDown", f"deleted {pod.name}: replicas is {spec.replicas}")
                )
                progress_reason = progress_reason or "Scaling"
        avoid = tuple(
            sorted(
                n.name
                for n in observed.nodes.values()
                if node_problem(n, n.name, observed.now, spec.failover.node_lost_after_seconds)
            )
        )
        if held is not None or len(avoid) == len(observed.nodes):
            avoid = ()  # every node suspect says more about our view than the nodes: let the scheduler choose
        for ordinal in range(spec.replicas):
            name = names.pod_name(fts.name, ordinal)
            if name in by_name:
                continue
            plan.creates.append(
                build_pod(
                    spec,
                    owner,
                    ordinal,
                    role=names.ROLE_REPLICA,
                    term=term,
                    avoid_nodes=avoid,
                    restore_from=restore_from,
                )
            )
            progress_reason = progress_reason or "Creating"
        if plan.creates:
            created = ", ".join(p["metadata"]["name"] for p in plan.creates)
            suffix = f", restored from checkpoint {restore_from}" if restore_from else ""
            events.append(EventSpec("Normal", "Created", f"created pods {created}{suffix}"))
        plan.hooks = _hook_calls(spec, decision, by_name, verdicts)
        start = checkpoint_plan.start
        if start is not None:
            source = by_name.get(str(start.get("sourcePod")))
            if source is not None:
                plan.job_creates.append(
                    build_checkpoint_job(
                        spec,
                        owner,
                        checkpoint_id=str(start["id"]),
                        job_name=str(start["job"]),
                        source=source,
                        term=int(start.get("term") or term),
                    )
                )
        plan.job_deletes = checkpoint_plan.delete_jobs
        if rollout_ready and not plan.deletes and not plan.creates and decision.reason != "RollingUpdate":
            victims = sorted((p for p in outdated if p.name != primary), key=lambda p: -p.ordinal)
            victim = victims[0] if victims else (outdated[0] if spec.replicas == 1 else None)
            if victim is not None:
                plan.deletes.append(PodDelete(victim.name, victim.uid, False, "rolling update"))
                events.append(
                    EventSpec("Normal", "Rolled", f"replacing {victim.name} to apply the new template")
                )
        if outdated:
            progress_reason = progress_reason or "RollingUpdate"
        for desired in [*build_services(spec, owner), build_pdb(spec, owner)]:
            observed_obj = (
                observed.pdb
                if desired["kind"] == "PodDisruptionBudget"
                else observed.services.get(desired["metadata"]["name"])
            )
            if observed_obj is None:
                plan.owned_creates.append(desired)
            elif drifted(desired, observed_obj):
                plan.applies.append(desired)

    active = [p for p in pods if not p.deleting]
    if not progress_reason and (len(in_range) != spec.replicas or len(active) != len(in_range)):
        progress_reason = "Scaling"
    if not progress_reason and any(verdicts[p.name].health == Health.STARTING for p in active):
        progress_reason = "Starting"
    routed_event = _mark_routed(
        history,
        primary,
        by_name[primary].pod_ip if primary in by_name else "",
        observed.primary_endpoints,
        now,
    )
    if routed_event is not None:
        events.append(routed_event)
    if acting:
        _mark_fenced(history, pods, now)
    serving_count = sum(1 for p in active if serving[p.name])
    primary_serving = not spec.primary_replica or (bool(primary) and serving.get(primary, False))
    unhealthy = [
        p.name for p in active if verdicts[p.name].health in (Health.FAILED, Health.LOST, Health.DEGRADED)
    ]
    all_good = (
        all_present
        and not outdated
        and len(active) == spec.replicas
        and all(serving[p.name] or roles[p.name] == names.ROLE_FENCED for p in in_range)
        and serving_count == spec.replicas
    )
    ready = all_good and primary_serving
    available = serving_count > 0 and primary_serving
    summary = f"{serving_count}/{spec.replicas} replicas serving"

    condition_list = [
        cond.Condition(cond.READY, ready, "AllReplicasReady" if ready else "NotAllReplicasReady", summary),
        cond.Condition(
            cond.AVAILABLE,
            available,
            "Serving" if available else ("PrimaryNotServing" if serving_count else "NoServingPods"),
            summary,
        ),
        cond.Condition(
            cond.PROGRESSING,
            bool(progress_reason) and acting,
            "Paused" if spec.paused else (progress_reason or "Stable") if acting else "InvalidSpec",
            "" if not progress_reason else f"{progress_reason}: {summary}",
        ),
        cond.Condition(
            cond.DEGRADED,
            bool(unhealthy),
            "PodsUnhealthy" if unhealthy else "AllHealthy",
            ", ".join(f"{n}: {verdicts[n].health.value} ({verdicts[n].reason})" for n in unhealthy),
        ),
        cond.Condition(
            cond.INVALID_SPEC,
            bool(problems),
            "OperatorValidationFailed" if problems else "SpecValid",
            "; ".join(problems),
        ),
    ]
    condition_list.append(_node_loss_condition(held, previous, events))
    if checkpoint_plan.condition is not None:
        condition_list.append(checkpoint_plan.condition)
    if spec.primary_replica:
        in_flight = bool(history) and not history[-1].get("routedAt")
        condition_list.append(
            cond.Condition(
                cond.FAILING_OVER,
                in_flight or bool(decision.throttled),
                "Throttled" if decision.throttled else ("InProgress" if in_flight else "Idle"),
                decision.throttled
                or (
                    f"promoting {history[-1].get('to')} (term {history[-1].get('term')})" if in_flight else ""
                ),
            )
        )
        condition_list.append(
            cond.Condition(
                cond.PRIMARY_UNAVAILABLE,
                not primary,
                "NoHealthyReplica" if not primary else "PrimaryElected",
                "" if primary else "no healthy pod can be primary",
            )
        )

    if problems:
        phase = "Invalid"
        if not cond.is_true(previous.get("conditions") or [], cond.INVALID_SPEC):
            events.append(EventSpec("Warning", "InvalidSpec", "; ".join(problems)))
    elif spec.paused:
        phase = "Paused"
    elif ready:
        phase = "Ready"
    elif available:
        phase = "Updating" if outdated else "Degraded"
    else:
        phase = (
            "Pending" if all(verdicts[p.name].health == Health.STARTING for p in active) else "Unavailable"
        )

    status: dict[str, Any] = {
        "observedGeneration": fts.generation,
        "phase": phase,
        "replicas": len(active),
        "readyReplicas": sum(1 for p in active if p.ready),
        "servingReplicas": serving_count,
        "updatedReplicas": sum(1 for p in active if updated[p.name]),
        "selector": f"{names.LABEL_SERVICE}={fts.name}",
        "primary": primary,
        "term": term,
        "pods": _status_pods(
            pods,
            verdicts,
            roles,
            serving,
            observed.nodes,
            desired_hash,
            list(previous.get("pods") or []),
            now,
        ),
        "failovers": history,
        "checkpoints": checkpoint_plan.history,
        "lastSuccessfulCheckpoint": checkpoint_plan.last_successful,
        "checkpointSchedule": checkpoint_plan.schedule_state,
        "recovery": recovery,
        "switchover": switchover_answer,
        "conditions": cond.merge_conditions(
            previous.get("conditions") or [], condition_list, generation=fts.generation, now=now
        ),
    }
    plan.status = status
    plan.events = events
    plan.promotion = decision.reason if decision.promoted else ""
    plan.write_status = _canonical(status) != _canonical({k: previous.get(k) for k in status})
    plan.guard_status = term != int(previous.get("term") or 0) or primary != str(
        previous.get("primary") or ""
    )
    deadlines = [v.deadline for v in verdicts.values() if v.deadline is not None]
    if decision.retry_at is not None:
        deadlines.append(decision.retry_at)
    if checkpoint_plan.next_look is not None:
        deadlines.append(checkpoint_plan.next_look)
    if acting and progress_reason:
        # Work in progress is driven by watch events; a look every few seconds means a missed one costs
        # seconds, not a resync period.
        deadlines.append(observed.now + timedelta(seconds=PROGRESS_RECHECK_SECONDS))
    if deadlines:
        plan.requeue_after = max(0.1, (min(deadlines) - observed.now).total_seconds() + 0.1)
    return plan
