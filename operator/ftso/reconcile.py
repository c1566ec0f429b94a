"""The pure heart of the operator: observed state in, a plan of actions and the new status out.

`decide` runs named phases in order. Each is a pure function of the observation and of earlier phases'
results; it returns its own outputs and Events and changes nothing it was given:

    judge            Judgement    the spec, node-loss hold, every pod's health
    plan_rollout     Rollout      outdated pods, how many may go down now, whether the primary must move
    decide_roles     Roles        who is primary at which term; the failover record; the switchover answer
    plan_checkpoints Checkpoints  checkpoint history, Jobs to start and delete; automatic recovery
    assign_labels    Labels       each pod's role and serving label, and the patches that move them
    plan_pods        PodWork      replacements, creations, scale-down, the rollout's next pods, hooks
    plan_traffic     TrafficWork  spec.traffic: weights, per-pod Services, the HTTPRoute, a provider's object
    plan_owned       OwnedWork    the Services and the PodDisruptionBudget
    stamp_history    History      routedAt and fencedAt on the failover records
    tally            Tally        counts and progress, what the conditions say
    report           Report       conditions and phase
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, cast

from ftso import conditions as cond
from ftso import kinds, names
from ftso.api.spec import (
    FAILOVER_HISTORY_LIMIT,
    MAX_FAILOVERS_PER_HOUR,
    MAX_REPLICAS,
    FtsSpec,
    MetricsHealthSpec,
    operator_judged_problems,
    parse_spec,
    resolve_max_unavailable,
)
from ftso.builders import (
    Endpoint,
    Owner,
    build_checkpoint_job,
    build_pdb,
    build_pod,
    build_primary_slice,
    build_services,
    drifted,
    slice_drifted,
    stale_metadata,
    template_hash,
    traffic_fields_removal,
)
from ftso.checkpoints import CheckpointInputs, CheckpointPlan, JobView, decide_checkpoints, restore_source
from ftso.health import (
    NODE_SILENT_AFTER_SECONDS,
    NodeLossHold,
    Verdict,
    has_been_ready,
    judge_pod,
    node_loss_confirmed_after,
    node_loss_held,
    node_problem,
    proven_stopped,
    unreachable,
)
from ftso.model import NodeView, PodView, format_time, parse_time
from ftso.names import ChangeKind, ConditionType, EventReason, Health, Phase, Promotion, Reason
from ftso.plan import EventSpec, HookCall, MetadataRemoval, Plan, PodDelete, PodPatch
from ftso.roles import Candidacy, RoleDecision, bad_annotations, decide_primary, failover_times
from ftso.settings import OperatorSettings
from ftso.status import (
    FailoverRecord,
    FtsStatus,
    PodStatus,
    Recovery,
    SwitchoverAnswer,
    UnreachablePod,
    failover_records,
    failover_times_state,
    recovery_state,
    unreachable_pods,
)
from ftso.traffic import (
    LoadState,
    TrafficView,
    Weights,
    build_pod_services,
    build_provider_policy,
    build_route,
    changed,
    pod_service_ordinals,
    pod_weights,
    provider_of,
    traffic_condition,
)
from ftso.usage import (
    KEPT_SERVING,
    Breach,
    MetricsVerdict,
    PodUsage,
    breach_state,
    fresh,
    metrics_verdict,
)

# Work in progress is driven by watch events; a look every few seconds means a missed one costs seconds,
# not a resync period.
PROGRESS_RECHECK_SECONDS = 5
# With health.metrics, a resource is looked at this often: metrics-server takes a sample every 10 to 60 s.
USAGE_LOOK_SECONDS = 10
# Every message and reason in status is bounded, so the status of 1,000 failed pods still fits the CRD's
# caps (a condition message: 32768 characters) and etcd's object size.
FAILURE_MESSAGE_LIMIT = 1024
REASON_LIMIT = 256


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
    primary_slices: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by name
    jobs: tuple[JobView, ...] = ()
    # Set when the operator's own view of the nodes cannot be trusted (its heartbeat watch went silent).
    node_view_in_doubt: str = ""
    max_lost_node_share: float = OperatorSettings.max_lost_node_share
    # What the API server refused to create in the last attempt ("Pod svc-1" -> its message).
    create_failures: Mapping[str, str] = field(default_factory=dict)
    # The status names a primary whose pod this view has never held: another writer's news, not a loss.
    primary_unseen: bool = False
    # A pod has carried a newer term than the status for longer than news takes to arrive (the controller
    # measures it): not news but a term someone else wrote. Acted on: the term is raised to the pod's.
    behind_too_long: bool = False
    # spec.traffic's objects as the API has them; None when not looked up (no Gateway named, before or now)
    traffic: TrafficView | None = None
    # health.metrics: the newest PodMetrics sample of each pod, and why there are none when the API failed
    usage: Mapping[str, PodUsage] = field(default_factory=dict)
    metrics_problem: str = ""
    metrics_rejected: Mapping[str, str] = field(default_factory=dict)  # pod -> why its PodMetrics was ignored


# Phase 1: judge


@dataclass(frozen=True)
class Judgement:
    """What every later phase reads: the observation, the parsed spec and the health of every pod."""

    observed: Observed
    spec: FtsSpec
    owner: Owner
    stamp: str  # now, as written to status
    verdicts: Mapping[str, Verdict]
    held: NodeLossHold | None  # node loss is not acted on while set
    problems: tuple[str, ...]  # what only the operator can find wrong with the spec
    desired_hash: str
    breaches: Mapping[str, Breach]  # pod name -> its usage over a threshold (health.metrics)
    # Nodes NotReady or silent and not proven stopped: their pods may still run, unseen and unstoppable.
    unreachable_nodes: frozenset[str] = frozenset()
    # Pods seen on such a node, kept after they vanish until it is proven stopped (status.unreachablePods).
    unreachable_pods: tuple[UnreachablePod, ...] = ()

    @property
    def held_names(self) -> frozenset[str]:
        """Names whose last pod vanished on an unreachable node: no new pod takes them yet."""
        seen = {p.uid for p in self.observed.pods}
        return frozenset(e["name"] for e in self.unreachable_pods if e["uid"] not in seen)

    def may_hold_data(self, pod: PodView) -> bool:
        return may_hold_data(
            pod, self.verdicts[pod.name], unreachable_node=pod.node_name in self.unreachable_nodes
        )

    def held_back(self, pod: PodView) -> bool:
        """It may hold the data but cannot serve now, and may come back: its node is unreachable, or it failed
        its readiness while its process runs. (A pod failed for its usage is busy: its budget rules it.)"""
        verdict = self.verdicts[pod.name]
        doubt = pod.node_name in self.unreachable_nodes or (
            verdict.health == Health.FAILED and verdict.breached_at is None
        )
        return doubt and self.may_hold_data(pod)

    @property
    def now(self) -> datetime:
        return self.observed.now

    @property
    def pods(self) -> tuple[PodView, ...]:
        return self.observed.pods

    @property
    def by_name(self) -> Mapping[str, PodView]:
        return {p.name: p for p in self.observed.pods}

    @property
    def by_uid(self) -> Mapping[str, PodView]:
        return {p.uid: p for p in self.observed.pods}

    @property
    def previous(self) -> Mapping[str, Any]:
        return self.observed.fts.status

    @property
    def acting(self) -> bool:
        """Paused or invalid: report, change nothing."""
        return not self.spec.paused and not self.problems

    def health(self, pod: PodView) -> Health:
        return self.verdicts[pod.name].health

    def updated(self, pod: PodView) -> bool:
        return pod.template_hash == self.desired_hash


def judge(observed: Observed) -> Judgement:
    fts = observed.fts
    spec = parse_spec(fts.spec)
    lost_after = node_loss_confirmed_after(spec.failover.node_lost_after_seconds)
    held = node_loss_held(
        observed.nodes,
        observed.now,
        lost_after,
        max_lost_share=observed.max_lost_node_share,
        view_in_doubt=observed.node_view_in_doubt,
    )
    verdicts = {
        p.name: judge_pod(p, observed.nodes, spec.health, observed.now, lost_after, trust_nodes=held is None)
        for p in observed.pods
    }
    breaches: dict[str, Breach] = {}
    if spec.health.metrics is not None:
        verdicts, breaches = judge_usage(observed, spec, spec.health.metrics, verdicts)
    cut_off = frozenset(n for n, v in observed.nodes.items() if unreachable(v, n, observed.now, lost_after))
    return Judgement(
        observed=observed,
        spec=spec,
        owner=Owner(fts.name, fts.namespace, fts.uid),
        stamp=format_time(observed.now),
        verdicts=verdicts,
        held=held,
        problems=tuple(operator_judged_problems(spec)),
        desired_hash=template_hash(spec),
        breaches=breaches,
        unreachable_nodes=cut_off,
        unreachable_pods=_unreachable_pods(observed, cut_off),
    )


# Entries read back from status at most: more pods than this never belong to one resource.
UNREACHABLE_PODS_LIMIT = 2 * MAX_REPLICAS


def _unreachable_pods(observed: Observed, cut_off: frozenset[str]) -> tuple[UnreachablePod, ...]:
    """Every pod on an unreachable node, and every one seen there before whose node is neither proven stopped
    (gone, or tainted out-of-service) nor trusted again (Ready and renewing, so its kubelet stops what the API
    no longer has): a force-deleted pod's process may still run there, with its data and its name."""

    def in_doubt(node_name: str) -> bool:
        node = observed.nodes.get(node_name)
        return not proven_stopped(node) and bool(
            node_problem(node, node_name, observed.now, NODE_SILENT_AFTER_SECONDS)
        )

    entries = unreachable_pods(observed.fts.status, UNREACHABLE_PODS_LIMIT)
    kept = {e["uid"]: e for e in entries if in_doubt(e["node"])}
    stamp = format_time(observed.now)
    for pod in observed.pods:
        if pod.node_name in cut_off and pod.uid not in kept:
            kept[pod.uid] = {"name": pod.name, "uid": pod.uid, "node": pod.node_name, "since": stamp}
    ordered = sorted(kept.values(), key=lambda e: (e["name"], e["since"], e["uid"]))
    return tuple(ordered[:UNREACHABLE_PODS_LIMIT])


def judge_usage(
    observed: Observed, spec: FtsSpec, metrics: MetricsHealthSpec, verdicts: Mapping[str, Verdict]
) -> tuple[dict[str, Verdict], dict[str, Breach]]:
    """A pod its probes call Healthy is Degraded, then Failed, by a sustained breach of a usage threshold.
    The breach lives in status, so an operator restart neither forgets nor restarts it."""
    before = {p.get("name"): p for p in observed.fts.status.get("pods") or []}
    breaches: dict[str, Breach] = {}
    wanted: dict[str, MetricsVerdict] = {}
    for pod in observed.pods:
        sample = observed.usage.get(pod.name)
        is_fresh = fresh(sample, pod, metrics, observed.now)
        breach = breach_state(metrics, sample, _previous_breach(before.get(pod.name) or {}, pod), is_fresh)
        if breach is not None:
            breaches[pod.name] = breach
        verdict = metrics_verdict(metrics, sample, breach, is_fresh)
        if verdict is not None and verdicts[pod.name].health == Health.HEALTHY:
            wanted[pod.name] = verdict
    return limit_usage(observed, spec, verdicts, wanted), breaches


def _previous_breach(entry: Mapping[str, Any], pod: PodView) -> Breach | None:
    """The breach status keeps, unless it is a predecessor's of the same name (or not a time with a zone:
    status can be written by anyone allowed to). Kept without its newest sample, it was last seen when
    it began."""
    since = _zoned(parse_time(entry.get("breachSince")))
    born = pod.started_at or pod.created_at
    if since is None or (born is not None and since < born):
        return None
    sampled = _zoned(parse_time(entry.get("breachSampledAt"))) or since
    return Breach(since, max(since, sampled))


def _zoned(at: datetime | None) -> datetime | None:
    return at if at is not None and at.tzinfo is not None else None


def limit_usage(
    observed: Observed, spec: FtsSpec, probed: Mapping[str, Verdict], wanted: Mapping[str, MetricsVerdict]
) -> dict[str, Verdict]:
    """Usage takes pods out of service as a voluntary disruption, as a rollout does: never more than
    disruption.maxUnavailable down at once, counting those down for any other reason, and never the last
    serving pod, because a load every pod carries moves to the others as each is drained, and would empty
    the service. Who goes first: a pod drained already (no flip-flop as the load moves), then the longest in
    breach, the primary last. A primary is never replaced for its usage, only failed over from."""
    judged = dict(probed)
    status = observed.fts.status
    primary = str(status.get("primary") or "")
    drained_before = {
        str(p.get("name"))
        for p in status.get("pods") or []
        if p.get("breachSince") and p.get("health") in (Health.DEGRADED, Health.FAILED)
    }
    replicas = spec.replicas
    up = [
        p
        for p in observed.pods
        if 0 <= p.ordinal < replicas
        and not p.deleting
        and probed[p.name].health == Health.HEALTHY
        and p.role != names.ROLE_FENCED
    ]
    budget = resolve_max_unavailable(spec.max_unavailable, replicas)
    down = replicas - len(up)
    room = max(0, min(budget - down, len(up) - 1))
    order = sorted(
        (p for p in up if p.name in wanted),
        key=lambda p: (p.name not in drained_before, p.name == primary, wanted[p.name].since, p.ordinal),
    )
    why = (
        "never the last serving pod"
        if len(up) - 1 < budget - down
        else f"disruption.maxUnavailable is {budget}: {down} down for other reasons, "
        f"{min(room, len(order))} drained for usage"
    )
    for pod in order[room:]:
        judged[pod.name] = Verdict(Health.HEALTHY, f"{wanted[pod.name].detail}: {KEPT_SERVING} ({why})")
    in_service = {p.name for p in order[room:]}
    for name, verdict in wanted.items():
        if name in in_service:
            continue
        if name == primary:  # failed over from first; drained as a replica once another one took over
            judged[name] = Verdict(
                Health.DEGRADED, f"{verdict.detail}: a replica takes over", breached_at=verdict.since
            )
        else:
            judged[name] = Verdict(verdict.health, verdict.reason, breached_at=verdict.since)
    return judged


# Phase 2: rollout


@dataclass(frozen=True)
class Rollout:
    in_range: tuple[PodView, ...]  # pods with an ordinal below spec.replicas, not being deleted
    outdated: tuple[PodView, ...]  # ... of which run an older template
    room: int  # pods the rollout may take down now: maxUnavailable less those down already
    steady: bool  # every pod in range present and Healthy
    wants_primary: bool  # only the primary is outdated: time for a switchover to an updated replica


def plan_rollout(j: Judgement) -> Rollout:
    replicas = j.spec.replicas
    in_range = tuple(p for p in j.pods if 0 <= p.ordinal < replicas and not p.deleting)
    outdated = tuple(p for p in in_range if not j.updated(p))
    healthy = sum(1 for p in in_range if j.health(p) == Health.HEALTHY)
    steady = len(in_range) == replicas and healthy == replicas
    primary = str(j.previous.get("primary") or "")
    budget = resolve_max_unavailable(j.spec.max_unavailable, replicas)
    return Rollout(
        in_range=in_range,
        outdated=outdated,
        room=max(0, budget - (replicas - healthy)) if outdated else 0,
        steady=steady,
        wants_primary=steady and bool(outdated) and all(p.name == primary for p in outdated) and replicas > 1,
    )


# Phase 3: roles


@dataclass(frozen=True)
class Roles:
    decision: RoleDecision
    history: tuple[FailoverRecord, ...]  # with the new change of primary, if any
    failover_times: tuple[str, ...]  # when the unplanned failovers the limits count were decided
    switchover: SwitchoverAnswer | dict[str, Any]
    events: tuple[EventSpec, ...]

    @property
    def primary(self) -> str:
        return self.decision.primary

    @property
    def term(self) -> int:
        return self.decision.term


def decide_roles(j: Judgement, rollout: Rollout) -> Roles:
    previous = j.previous
    history = tuple(failover_records(previous))
    answer: SwitchoverAnswer | dict[str, Any] = dict(previous.get("switchover") or {})
    primary, term = str(previous.get("primary") or ""), int(previous.get("term") or 0)
    kept = failover_times_state(previous, MAX_FAILOVERS_PER_HOUR)
    if not j.acting:
        return Roles(RoleDecision(primary, term), history, tuple(kept), answer, ())
    floor = newest_pod_term(j.observed)
    if not j.spec.primary_replica:
        decision = RoleDecision(primary, max(term, floor))
        return Roles(decision, history, tuple(kept), answer, tuple(_term_events(j, term, decision)))
    annotations = j.observed.fts.annotations
    times = failover_times(kept, history, j.spec.failover, j.now)
    decision = decide_primary(
        primary=primary,
        term=max(term, floor),  # every new term exceeds every term a live pod carries
        pods=_electable(j),
        verdicts=j.verdicts,
        replicas=j.spec.replicas,
        updated={p.name: j.updated(p) for p in j.pods},
        rollout_wants_primary=rollout.wants_primary,
        failover=j.spec.failover,
        failover_times=times,
        now=j.now,
        switchover_request=annotations.get(names.ANNOTATION_SWITCHOVER, ""),
        switchover_answered=str(answer.get("request") or ""),
        candidacy=_candidacy(j, history),
    )
    if term == 0 and decision.reason == Promotion.FAILOVER:  # a status wiped by hand: its first election
        decision = dataclasses.replace(decision, reason=Promotion.ELECTED)
    if decision.promoted and decision.reason != Promotion.ELECTED:
        record = _failover_record(j, decision)
        history = (*history, record)[-FAILOVER_HISTORY_LIMIT:]
        if record["kind"] == ChangeKind.FAILOVER:
            kept.append(j.stamp)
    # Said once: a failover still throttled since the last reconcile posts no second Event.
    throttled_before = cond.reason_of(previous.get("conditions") or [], ConditionType.FAILING_OVER)
    events = tuple(
        e
        for e in (*_role_events(decision), *_annotation_events(j, decision), *_term_events(j, term, decision))
        if not (throttled_before == Reason.THROTTLED and e.reason == EventReason.FAILOVER_THROTTLED)
    )
    stamps = tuple(format_time(t) for t in failover_times(kept, history, j.spec.failover, j.now))
    return Roles(decision, history, stamps, decision.switchover or answer, events)


def _candidacy(j: Judgement, history: Sequence[FailoverRecord]) -> Candidacy:
    fence_uids = set(pending_fences(history).values())
    barred = {p.name for p in j.pods if p.role == names.ROLE_FENCED or p.uid in fence_uids}
    suspect = {
        p.name
        for p in j.pods
        if node_problem(j.observed.nodes.get(p.node_name), p.node_name, j.now, NODE_SILENT_AFTER_SECONDS)
    }
    stranded = {p.name for p in j.pods if j.held_back(p)}
    return Candidacy(frozenset(barred), frozenset(suspect), frozenset(stranded))


def _term_events(j: Judgement, term: int, decision: RoleDecision) -> list[EventSpec]:
    """Said when the term is raised to a pod's without a change of primary: a status wiped by hand, or a
    pod whose term someone else wrote (its workload may patch it)."""
    if decision.promoted or decision.term <= term:
        return []
    above = sorted(p.name for p in j.pods if p.term == decision.term)
    message = (
        f"{', '.join(above)} carries term {decision.term}, above the status's {term}: the term is raised to "
        f"{decision.term} so that no pod's term goes back, and the next change of primary exceeds it"
    )
    return [EventSpec("Warning", EventReason.TERM_RAISED, bounded(message, FAILURE_MESSAGE_LIMIT))]


def _electable(j: Judgement) -> Mapping[str, PodView]:
    """The pods that may be elected. While a recovery runs, only those that loaded its checkpoint: any other
    pod was made after the data was lost and would come up empty."""
    checkpoint = enforced_recovery(j.spec, j.previous)
    if not checkpoint:
        return j.by_name
    return {p.name: p for p in j.pods if p.annotations.get(names.ANNOTATION_RESTORED_FROM) == checkpoint}


def enforced_recovery(spec: FtsSpec, status: Mapping[str, Any]) -> str:
    """The checkpoint of a recovery in progress that new pods can load (the spec still has a restore
    template), or "": without one, no pod could ever qualify."""
    recovery = recovery_state(status)
    checkpoint = "" if recovery.get("completedAt") else str(recovery.get("checkpoint") or "")
    return checkpoint if checkpoint and restore_source(spec, recovery, "") == checkpoint else ""


def _annotation_events(j: Judgement, decision: RoleDecision) -> list[EventSpec]:
    """Said when the annotations were weighed (an election), not at every reconcile."""
    bad = bad_annotations(j.pods) if decision.promoted else []
    if not bad:
        return []
    message = bounded("ignored (not a finite number): " + ", ".join(bad), FAILURE_MESSAGE_LIMIT)
    return [EventSpec("Warning", EventReason.INVALID_ANNOTATION, message)]


def _failover_record(j: Judgement, decision: RoleDecision) -> FailoverRecord:
    failed = j.by_name.get(decision.previous)
    record: FailoverRecord = {
        "term": decision.term,
        "kind": ChangeKind.SWITCHOVER if decision.planned else ChangeKind.FAILOVER,
        "reason": bounded(
            f"{decision.reason}" + (f": {decision.detail}" if decision.detail else ""), REASON_LIMIT
        ),
        "from": decision.previous,
        "to": decision.primary,
        "detectedAt": format_time(decision.detected_at or j.now),
        "decidedAt": j.stamp,
    }
    if decision.reason == Promotion.FAILOVER and failed is not None and not decision.demoted:
        record["fenceUid"] = failed.uid  # the fence lives in status: see pending_fences
    return record


def _role_events(decision: RoleDecision) -> list[EventSpec]:
    if decision.reason == Promotion.ELECTED:
        message = f"{decision.primary} became primary (term {decision.term})"
        return [EventSpec("Normal", EventReason.BECAME_PRIMARY, message)]
    if decision.reason == Promotion.LOST:
        message = (
            f"primary {decision.previous} failed ({decision.detail}) and no healthy replica can take over"
        )
        return [EventSpec("Warning", EventReason.PRIMARY_UNAVAILABLE, message)]
    events: list[EventSpec] = []
    if decision.throttled:
        message = f"primary {decision.previous or '-'} needs a failover: {decision.throttled}"
        events.append(EventSpec("Warning", EventReason.FAILOVER_THROTTLED, message))
    answer = decision.switchover
    if answer is not None and answer["result"] == names.SwitchoverResult.REFUSED:
        events.append(EventSpec("Warning", EventReason.SWITCHOVER_REFUSED, answer["message"]))
    if decision.reason == Promotion.FAILOVER:
        message = (
            f"{decision.previous or 'no primary'} failed ({decision.detail or 'gone'}); promoting "
            f"{decision.primary} (term {decision.term})"
        )
        events.append(EventSpec("Warning", EventReason.FAILOVER_STARTED, message))
    elif decision.reason is not None:
        message = (
            f"promoting {decision.primary} in place of {decision.previous} (term {decision.term}, "
            f"{decision.reason})"
        )
        events.append(EventSpec("Normal", EventReason.SWITCHOVER_STARTED, message))
    return events


# Phase 4: checkpoints and recovery


@dataclass(frozen=True)
class Checkpoints:
    plan: CheckpointPlan
    recovery: Recovery
    restore_from: str  # the checkpoint new pods load, or ""
    events: tuple[EventSpec, ...]


def plan_checkpoints(j: Judgement, roles: Roles) -> Checkpoints:
    fts = j.observed.fts
    given = CheckpointInputs(
        name=fts.name,
        created_at=fts.created_at or j.now,
        request=fts.annotations.get(names.ANNOTATION_CHECKPOINT, ""),
        previous=j.previous,
        jobs=j.observed.jobs,
        pods=[p for p in j.pods if not p.deleting],
        verdicts=j.verdicts,
        primary=roles.primary,
        term=roles.term,
        now=j.now,
        acting=j.acting,
    )
    plan = decide_checkpoints(j.spec, given)
    recovery, recovery_events = _recovery(j, plan, roles.decision)
    return Checkpoints(
        plan=plan,
        recovery=recovery,
        restore_from=restore_source(j.spec, recovery, plan.last_successful),
        events=(*(EventSpec(*e) for e in plan.events), *recovery_events),
    )


def _recovery(
    j: Judgement, checkpoints: CheckpointPlan, decision: RoleDecision
) -> tuple[Recovery, list[EventSpec]]:
    """The last rung: every pod lost and no replica to promote. New pods load the latest good checkpoint and
    one of them becomes primary with a new term; the age of that checkpoint is what may have been lost."""
    recovery = recovery_state(j.previous)
    active = bool(recovery.get("checkpoint")) and not recovery.get("completedAt")
    if active and decision.promoted:
        recovery["completedAt"] = j.stamp
        message = (
            f"{decision.primary} is primary (term {decision.term}), restored from checkpoint "
            f"{recovery.get('checkpoint')}; data-loss window {recovery.get('dataLossWindowSeconds')}s"
        )
        return recovery, [EventSpec("Normal", EventReason.RECOVERED_FROM_CHECKPOINT, message)]
    if active or not _recovery_needed(j, checkpoints, decision):
        return recovery, []
    entry = next((e for e in checkpoints.history if e["id"] == checkpoints.last_successful), None)
    finished = parse_time(entry.get("finishedAt") if entry else None) or j.now
    window = max(0, int((j.now - finished).total_seconds()))
    message = (
        f"every pod is lost: recreating them from checkpoint {checkpoints.last_successful} "
        f"(data-loss window {window}s)"
    )
    started: Recovery = {
        "checkpoint": checkpoints.last_successful,
        "startedAt": j.stamp,
        "dataLossWindowSeconds": window,
    }
    return started, [EventSpec("Warning", EventReason.RECOVERY_STARTED, message)]


def _recovery_needed(j: Judgement, checkpoints: CheckpointPlan, decision: RoleDecision) -> bool:
    spec = j.spec
    if not j.acting or not spec.primary_replica or decision.primary or decision.term == 0:
        return False
    if spec.checkpoint is None or spec.checkpoint.restore_template is None or not checkpoints.last_successful:
        return False
    # A pod that vanished on an unreachable node may still run there, with the data.
    return not j.held_names and not any(j.may_hold_data(p) for p in j.pods)


def may_hold_data(pod: PodView, verdict: Verdict, *, unreachable_node: bool) -> bool:
    """A pod that has been Ready may come back with the data: one that is Healthy or Degraded, one judged
    Failed only for its measured usage (busy, not empty) or its readiness (unready too long, its containers
    still running: the probe failed, not the process), and one on an unreachable node (not proven stopped).
    One that never was Ready holds none: after the last holder died it is a fresh pod that would start
    empty, so it must not stop a recovery."""
    if verdict.health in (Health.HEALTHY, Health.DEGRADED) or verdict.breached_at is not None:
        return True
    if verdict.health == Health.FAILED and _still_running(pod):
        return has_been_ready(pod)
    return unreachable_node and has_been_ready(pod)


def _still_running(pod: PodView) -> bool:
    """Its process runs, as its kubelet reports: Running, no container failed, not being deleted."""
    return pod.phase == "Running" and not pod.container_failure and not pod.deleting


# Phase 5: labels


@dataclass(frozen=True)
class Labels:
    roles: Mapping[str, str]  # pod name -> its role label
    serving: Mapping[str, bool]  # pod name -> whether the Services route to it
    patches: tuple[PodPatch, ...]  # demotions first


def pending_fences(history: Sequence[FailoverRecord]) -> dict[str, str]:
    """Pod name -> uid of every failed-over primary not yet known gone: the fence lives in status, so a
    reconcile that died after deciding a failover cannot let the old primary come back as a replica."""
    return {
        h["from"]: h["fenceUid"]
        for h in history
        if h.get("kind") == ChangeKind.FAILOVER and h.get("fenceUid") and not h.get("fencedAt")
    }


def desired_role(
    pod: PodView, verdict: Verdict, *, spec: FtsSpec, primary: str, fences: Mapping[str, str]
) -> str:
    if not spec.primary_replica:
        return names.ROLE_REPLICA
    if pod.name == primary:
        return names.ROLE_PRIMARY
    if (
        pod.role == names.ROLE_FENCED
        or fences.get(pod.name) == pod.uid
        or (pod.role == names.ROLE_PRIMARY and verdict.gone)
    ):
        return names.ROLE_FENCED  # a failed former primary: out of every Service until it is gone
    return names.ROLE_REPLICA


def assign_labels(j: Judgement, roles: Roles) -> Labels:
    decision = roles.decision
    fences = pending_fences(roles.history)
    fenced = decision.reason in (Promotion.FAILOVER, Promotion.LOST) and not decision.demoted
    if fenced and decision.previous in j.by_name:
        fences[decision.previous] = j.by_name[decision.previous].uid
    role = {
        p.name: desired_role(p, j.verdicts[p.name], spec=j.spec, primary=roles.primary, fences=fences)
        for p in j.pods
    }
    if not j.acting:  # paused or invalid: labels stay as they are, a pod may only stop serving
        role = {p.name: p.role or role[p.name] for p in j.pods}
    serving = {p.name: _serves(j, p, role[p.name], roles.primary) for p in j.pods}
    if not j.acting:
        serving = {p.name: serving[p.name] and p.labels.get(names.LABEL_SERVING) == "true" for p in j.pods}
        return Labels(role, serving, ())
    return Labels(role, serving, tuple(_pod_patches(j.pods, role, serving, roles.term)))


def _serves(j: Judgement, pod: PodView, role: str, primary: str) -> bool:
    """A Healthy pod serves. So does a primary over a usage threshold until a replica takes over (the
    failover may wait for its delay or the rate limits): draining it first would leave nobody to write to."""
    verdict = j.verdicts[pod.name]
    if role == names.ROLE_FENCED:
        return False
    return verdict.health == Health.HEALTHY or (
        pod.name == primary and verdict.health == Health.DEGRADED and verdict.breached_at is not None
    )


def _pod_patches(
    pods: Sequence[PodView], roles: Mapping[str, str], serving: Mapping[str, bool], term: int
) -> list[PodPatch]:
    leaving_primary: list[PodPatch] = []
    stopping: list[PodPatch] = []
    others: list[PodPatch] = []
    peers_only: list[PodPatch] = []
    # Every pod learns its peers (the others' addresses) from the operator: replication needs no wiring.
    members = sorted(
        (p for p in pods if p.pod_ip and not p.deleting and roles[p.name] != names.ROLE_FENCED),
        key=lambda p: (p.ordinal, p.name),
    )
    for pod in pods:
        labels = {
            names.LABEL_ROLE: roles[pod.name],
            names.LABEL_SERVING: "true" if serving[pod.name] else "false",
        }
        annotations = {names.ANNOTATION_TERM: str(term)}
        peers = "\n".join(p.pod_ip for p in members if p.name != pod.name)
        if peers or names.ANNOTATION_PEERS in pod.annotations:
            annotations[names.ANNOTATION_PEERS] = peers
        if all(pod.labels.get(k) == v for k, v in labels.items()) and all(
            pod.annotations.get(k) == v for k, v in annotations.items()
        ):
            continue
        if all(pod.labels.get(k) == v for k, v in labels.items()) and pod.annotations.get(
            names.ANNOTATION_TERM
        ) == str(term):
            # Only the peers changed: write only them, last, so a reconcile that raced another (and saw
            # older labels) never re-asserts a role for the sake of an address.
            peers_only.append(PodPatch(pod.name, {}, {names.ANNOTATION_PEERS: peers}))
            continue
        patch = PodPatch(pod.name, labels, annotations)
        # Whoever stops serving or stops being primary moves first, so two primaries never serve at once; a
        # primary that stays primary is no demotion (found by tests/test_properties.py: it went first).
        stops_being_primary = (
            pod.labels.get(names.LABEL_ROLE) == names.ROLE_PRIMARY and roles[pod.name] != names.ROLE_PRIMARY
        )
        if stops_being_primary:
            leaving_primary.append(patch)
        elif not serving[pod.name]:
            stopping.append(patch)
        else:
            others.append(patch)
    # Every pod that stops being primary goes before any pod labelled primary, even one that stops serving.
    return leaving_primary + stopping + others + peers_only


# Phase 6: pods


@dataclass(frozen=True)
class PodWork:
    deletes: tuple[PodDelete, ...] = ()
    creates: tuple[dict[str, Any], ...] = ()
    hooks: tuple[HookCall, ...] = ()
    hooks_term: int = 0
    job_creates: tuple[dict[str, Any], ...] = ()
    job_deletes: tuple[str, ...] = ()
    events: tuple[EventSpec, ...] = ()
    progress: str = ""  # the first kind of work in progress (names.Reason), or ""
    waiting: str = ""  # why some pods are not recreated yet


def plan_pods(
    j: Judgement, rollout: Rollout, roles: Roles, labels: Labels, checkpoints: Checkpoints
) -> PodWork:
    if not j.acting:
        return PodWork()
    # Node loss held: the view is in doubt, so nothing is deleted for a recovery either.
    recovering = "" if j.held else enforced_recovery(j.spec, {"recovery": checkpoints.recovery})
    replaced = [
        r
        for p in sorted(j.pods, key=lambda p: -p.ordinal)
        if (r := _replacement(j, p, labels, roles) or _unrestored(j, p, recovering))
    ]
    creates, created = _creations(j, roles.term, checkpoints.restore_from)
    rolled: list[tuple[PodDelete, EventSpec]] = []
    if not replaced and not creates:
        rolled = _rollout_next(j, rollout, roles)
    waiting, waiting_events = _names_held(j)
    progress = next((reason for _, _, reason in replaced), "") or (Reason.CREATING if creates else "")
    progress = progress or (Reason.POD_MAY_STILL_RUN if waiting else "")
    hooks, hooks_term = _hook_calls(j, roles)
    return PodWork(
        deletes=(*(d for d, _, _ in replaced), *(d for d, _ in rolled)),
        creates=tuple(creates),
        hooks=tuple(hooks),
        hooks_term=hooks_term,
        job_creates=_checkpoint_jobs(j, checkpoints, roles.term),
        job_deletes=tuple(checkpoints.plan.delete_jobs),
        events=(*(e for _, e, _ in replaced), *created, *(e for _, e in rolled), *waiting_events),
        progress=progress or (Reason.ROLLING_UPDATE if rollout.outdated else ""),
        waiting=waiting,
    )


def _names_held(j: Judgement) -> tuple[str, list[EventSpec]]:
    """Why some pods are not recreated yet, and one Warning when a pod vanishes on an unreachable node.
    Like a StatefulSet's, a name has at most one pod: a second could run beside the first, with the same
    identity. Proof that the first stopped is its node's object gone, or the node tainted out-of-service."""
    seen = j.by_uid
    held = [e for e in j.unreachable_pods if e["uid"] not in seen]
    if not held:
        return "", []
    said = {str(p.get("name")) for p in j.previous.get("pods") or []}
    lines = [f"{e['name']} may still run on unreachable node {e['node']}" for e in held]
    message = bounded(
        "; ".join(lines) + f": not recreated until the node is gone or tainted {names.TAINT_OUT_OF_SERVICE}",
        FAILURE_MESSAGE_LIMIT,
    )
    fresh = [e for e in held if e["name"] in said]  # in view at the last reconcile: vanished since
    events = [EventSpec("Warning", EventReason.POD_MAY_STILL_RUN, message)] if fresh else []
    return message, events


def _replacement(
    j: Judgement, pod: PodView, labels: Labels, roles: Roles
) -> tuple[PodDelete, EventSpec, Reason] | None:
    """Why this pod must go now, if it must: lost, failed, fenced, or scaled away."""
    verdict = j.verdicts[pod.name]
    if pod.deleting:
        return None
    if verdict.health in (Health.LOST, Health.FAILED) and _last_holders(j, pod):
        return None  # deleting it would throw away data that may come back (with its node, or Ready)
    if verdict.unready and pod.name == roles.primary:
        return None  # a primary that is only unready goes once it was failed over from (the limits may wait)
    if verdict.health in (Health.LOST, Health.FAILED):
        lost = verdict.health == Health.LOST
        reason = EventReason.POD_LOST if lost else EventReason.POD_FAILED
        event = EventSpec("Warning", reason, f"replacing {pod.name}: {verdict.reason}")
        return PodDelete(pod.name, pod.uid, lost, verdict.reason), event, Reason.REPLACING
    if labels.roles[pod.name] == names.ROLE_FENCED:
        event = EventSpec("Normal", EventReason.FENCED, f"replacing {pod.name}: it was failed over")
        return PodDelete(pod.name, pod.uid, False, "fenced former primary"), event, Reason.REPLACING
    if not 0 <= pod.ordinal < j.spec.replicas and pod.name != roles.primary:
        event = EventSpec(
            "Normal", EventReason.SCALED_DOWN, f"deleted {pod.name}: replicas is {j.spec.replicas}"
        )
        return PodDelete(pod.name, pod.uid, False, "scaled down"), event, Reason.SCALING
    return None


def _last_holders(j: Judgement, pod: PodView) -> bool:
    """The pod is held back with the data (see Judgement.held_back), and no pod that is not may hold it."""
    return j.held_back(pod) and not any(j.may_hold_data(p) and not j.held_back(p) for p in j.pods)


def _unrestored(j: Judgement, pod: PodView, checkpoint: str) -> tuple[PodDelete, EventSpec, Reason] | None:
    """During a recovery every pod loads its checkpoint. One that did not was made after the data was lost
    (it is empty) or came back after the recovery began (its data is no longer the service's)."""
    if not checkpoint or pod.deleting or pod.annotations.get(names.ANNOTATION_RESTORED_FROM) == checkpoint:
        return None
    why = f"it did not load checkpoint {checkpoint}, which the service is recovering from"
    event = EventSpec("Normal", EventReason.NOT_RESTORED, f"replacing {pod.name}: {why}")
    return PodDelete(pod.name, pod.uid, False, why), event, Reason.REPLACING


def _creations(j: Judgement, term: int, restore_from: str) -> tuple[list[dict[str, Any]], list[EventSpec]]:
    avoid = _nodes_to_avoid(j)
    taken = {*j.by_name, *j.held_names}
    creates = [
        build_pod(
            j.spec,
            j.owner,
            ordinal,
            role=names.ROLE_REPLICA,
            term=term,
            avoid_nodes=avoid,
            restore_from=restore_from,
        )
        for ordinal in range(j.spec.replicas)
        if names.pod_name(j.owner.name, ordinal) not in taken
    ]
    if not creates:
        return [], []
    created = ", ".join(p["metadata"]["name"] for p in creates)
    suffix = f", restored from checkpoint {restore_from}" if restore_from else ""
    return creates, [EventSpec("Normal", EventReason.CREATED, f"created pods {created}{suffix}")]


def _nodes_to_avoid(j: Judgement) -> tuple[str, ...]:
    """Nodes a replacement must not land on: those judged lost but not yet tainted by Kubernetes."""
    nodes = j.observed.nodes
    lost_after = node_loss_confirmed_after(j.spec.failover.node_lost_after_seconds)
    avoid = tuple(sorted(n.name for n in nodes.values() if node_problem(n, n.name, j.now, lost_after)))
    if j.held is not None or len(avoid) == len(nodes):
        return ()  # every node suspect says more about our view than the nodes: let the scheduler choose
    return avoid


def _rollout_next(j: Judgement, rollout: Rollout, roles: Roles) -> list[tuple[PodDelete, EventSpec]]:
    """The next outdated pods to replace, highest ordinals first, the primary last (after a switchover), as
    many as maxUnavailable leaves room for."""
    if rollout.room == 0 or roles.decision.reason == Promotion.ROLLING_UPDATE:
        return []
    victims = sorted((p for p in rollout.outdated if p.name != roles.primary), key=lambda p: -p.ordinal)
    if not victims and j.spec.replicas == 1:
        victims = list(rollout.outdated[:1])  # nobody to hand over to
    return [
        (
            PodDelete(v.name, v.uid, False, "rolling update"),
            EventSpec("Normal", EventReason.ROLLED, f"replacing {v.name} to apply the new template"),
        )
        for v in victims[: rollout.room]
    ]


def _hook_calls(j: Judgement, roles: Roles) -> tuple[list[HookCall], int]:
    """The hooks of the newest change of primary until its record says they were called: the reconcile
    that decided it may have died before calling them. At least once, and with the term, so idempotent."""
    hooks = j.spec.failover.hooks
    record = roles.history[-1] if roles.history else None
    if hooks is None or record is None or record.get("hooksCalledAt"):
        return [], 0
    if record["term"] != roles.term or record["to"] != roles.primary:
        return [], 0
    calls = []
    new = j.by_name.get(record["to"])
    if new is not None and new.pod_ip:
        url = hook_url(new.pod_ip, hooks.port, hooks.promote_path)
        calls.append(HookCall(new.name, url, names.ROLE_PRIMARY, record["term"], hooks.timeout_seconds))
    old = j.by_name.get(record["from"]) if record["from"] else None
    if old is not None and old.pod_ip and j.health(old) != Health.LOST:
        # A switchover, or a failover for load (no fence), demotes a live pod to a replica.
        planned = record["kind"] == ChangeKind.SWITCHOVER or not record.get("fenceUid")
        role = names.ROLE_REPLICA if planned else names.ROLE_FENCED
        url = hook_url(old.pod_ip, hooks.port, hooks.demote_path)
        calls.append(HookCall(old.name, url, role, record["term"], hooks.timeout_seconds))
    return calls, record["term"] if calls else 0


def hook_url(pod_ip: str, port: int, path: str) -> str:
    """An IPv6 address goes in brackets; the path is a path (the CRD and parse_spec see to it)."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}{path}"


def _checkpoint_jobs(j: Judgement, checkpoints: Checkpoints, term: int) -> tuple[dict[str, Any], ...]:
    start = checkpoints.plan.start
    source = j.by_name.get(start["sourcePod"]) if start is not None else None
    if start is None or source is None:
        return ()
    job = build_checkpoint_job(
        j.spec,
        j.owner,
        checkpoint_id=start["id"],
        job_name=start["job"],
        source=source,
        term=int(start.get("term") or term),
    )
    return (job,)


# Phase 7: Services and the PodDisruptionBudget


@dataclass(frozen=True)
class TrafficWork:
    weights: Mapping[str, int]  # pod name -> weight in the route (policy Weighted), else empty
    sampled_at: Mapping[str, datetime]  # pod name -> the usage sample its load-following weight came from
    services: tuple[dict[str, Any], ...]  # the pods' own Services (policy Weighted)
    service_deletes: tuple[tuple[str, str], ...]  # ("Service", name): pod Services no longer asked for
    applies: tuple[dict[str, Any], ...]  # the HTTPRoute and a provider's object, when new or changed
    deletes: tuple[tuple[str, str], ...]  # (kind, name): the route or a provider's object no longer asked for
    condition: cond.Condition
    next_step: datetime | None  # a slow start's next raise


def healthy_since(j: Judgement) -> dict[str, datetime]:
    """When each pod turned Healthy, as status recorded it; a pod Healthy only now starts now."""
    since = {}
    for entry in j.previous.get("pods") or []:
        at = parse_time(entry.get("since"))
        if entry.get("health") == Health.HEALTHY and at is not None:
            since[str(entry.get("name"))] = at
    return since


def load_state(j: Judgement) -> LoadState:
    """Load-following weights move from the last ones, once per new sample."""
    previous, sampled = {}, {}
    for entry in j.previous.get("pods") or []:
        name = str(entry.get("name"))
        if isinstance(entry.get("weight"), int):
            previous[name] = int(entry["weight"])
        if (at := parse_time(entry.get("loadSampledAt"))) is not None:
            sampled[name] = at
    return LoadState(previous, sampled, j.observed.usage)


def plan_traffic(j: Judgement, labels: Labels) -> TrafficWork:
    traffic, view = j.spec.traffic, j.observed.traffic
    condition = traffic_condition(traffic, view, j.owner.namespace, j.previous.get("conditions") or [])
    # Weights only under Weighted: every other resource would compute them on each reconcile for nothing.
    weights = (
        pod_weights(traffic, j.pods, labels.roles, labels.serving, healthy_since(j), j.now, load_state(j))
        if traffic.weighted
        else Weights({})
    )
    services = (
        tuple(build_pod_services(j.spec, j.owner, pod_service_ordinals(j.spec, j.pods)))
        if traffic.weighted and j.acting
        else ()
    )
    wanted = {s["metadata"]["name"] for s in services}
    service_deletes = tuple(
        ("Service", name)
        for name, body in j.observed.services.items()
        if names.LABEL_ORDINAL in _labels(body) and name not in wanted
    )
    by_pod, next_step, sampled = weights.by_pod, weights.next_step, weights.sampled_at
    if not j.acting or view is None or view.problem or kinds.HTTP_ROUTE.kind not in view.served:
        return TrafficWork(by_pod, sampled, services, service_deletes, (), (), condition, next_step)
    desired = []
    if traffic.routed:
        by_service = {s["metadata"]["name"]: by_pod.get(s["metadata"]["name"], 0) for s in services}
        desired.append(build_route(j.spec, j.owner, by_service if traffic.weighted else None))
        policy = build_provider_policy(j.spec, j.owner, provider_of(traffic, view.served))
        if policy is not None and policy["kind"] in view.served:
            desired.append(policy)
    present = {**view.policies, **({"HTTPRoute": view.route} if view.route is not None else {})}
    kept = {d["kind"] for d in desired}
    deletes = tuple((kind, j.owner.name) for kind in present if kind not in kept)
    applies = tuple(
        d for d in desired if d["kind"] not in view.foreign and changed(d, present.get(d["kind"]))
    )
    return TrafficWork(by_pod, sampled, services, service_deletes, applies, deletes, condition, next_step)


@dataclass(frozen=True)
class OwnedWork:
    creates: tuple[dict[str, Any], ...] = ()  # missing
    applies: tuple[dict[str, Any], ...] = ()  # changed by someone: server-side apply takes our fields back
    # Labels and annotations the spec no longer asks for: an apply would leave them (a create owns them too).
    removals: tuple[MetadataRemoval, ...] = ()
    routing: dict[str, Any] | None = None  # <name>-primary's EndpointSlice, when it must change
    deletes: tuple[tuple[str, str], ...] = ()  # <name>-primary's slices someone else manages


def plan_owned(j: Judgement, roles: Roles, labels: Labels, traffic: TrafficWork) -> OwnedWork:
    routing, deletes = plan_routing(j, roles, labels)
    if not j.acting:
        return OwnedWork(routing=routing)
    creates, applies, removals = [], [], []
    for desired in [*build_services(j.spec, j.owner), *traffic.services, build_pdb(j.spec, j.owner)]:
        seen = (
            j.observed.pdb
            if desired["kind"] == "PodDisruptionBudget"
            else j.observed.services.get(desired["metadata"]["name"])
        )
        if seen is None:
            creates.append(desired)
            continue
        if stale := stale_metadata(desired, seen):
            removals.append(
                MetadataRemoval(desired["kind"], desired["metadata"]["name"], stale.merge_patch())
            )
        if "selector" not in desired["spec"] and (seen.get("spec") or {}).get("selector"):
            # Applying without it would not remove it: the create that set it owns it.
            removals.append(
                MetadataRemoval("Service", desired["metadata"]["name"], {"spec": {"selector": None}})
            )
        if desired["kind"] == "Service" and (unset := traffic_fields_removal(desired, seen)):
            removals.append(MetadataRemoval("Service", desired["metadata"]["name"], unset))
        if stale or drifted(desired, seen):
            applies.append(desired)
    return OwnedWork(
        tuple(creates), tuple(applies), tuple(removals), routing, (*deletes, *traffic.service_deletes)
    )


def plan_routing(
    j: Judgement, roles: Roles, labels: Labels
) -> tuple[dict[str, Any] | None, tuple[tuple[str, str], ...]]:
    """<name>-primary routes to the primary once its labels say it serves as primary, and to nothing else.
    What an older version left (a selector, and the controller manager's slices and Endpoints) goes."""
    if not (j.spec.primary_replica and j.spec.service.ports):
        return None, ()
    primary_service = names.service_names(j.owner.name)[1]
    ours, others = None, []
    for name, body in j.observed.primary_slices.items():
        if _labels(body).get(names.LABEL_SLICE_MANAGED_BY) == names.SLICE_MANAGER:
            ours = body
        else:
            others.append(("EndpointSlice", name))
    if others or (j.observed.services.get(primary_service, {}).get("spec") or {}).get("selector"):
        others.append(("Endpoints", primary_service))  # no controller keeps it once the selector is gone
    endpoint = _primary_endpoint(j, roles, labels)
    if ours is not None:
        address_type = str(ours.get("addressType") or "IPv4")  # immutable once the slice exists
    elif endpoint is not None and j.acting:
        address_type = "IPv6" if ":" in endpoint.ip else "IPv4"
    else:
        return None, tuple(others)  # nothing to route yet
    # Paused or invalid: only the endpoint follows the pods; the ports stay as the Service has them.
    ports = None if j.acting or ours is None else list(ours.get("ports") or [])
    desired = build_primary_slice(j.spec, j.owner, endpoint, address_type, ports)
    return (desired if ours is None or slice_drifted(desired, ours) else None), tuple(others)


def _primary_endpoint(j: Judgement, roles: Roles, labels: Labels) -> Endpoint | None:
    pod = j.by_name.get(roles.primary)
    if pod is None or not pod.pod_ip or pod.deleting:
        return None
    if labels.roles.get(pod.name) != names.ROLE_PRIMARY or not labels.serving.get(pod.name):
        return None
    return Endpoint(pod.name, pod.uid, pod.pod_ip, pod.node_name)


def _labels(body: Mapping[str, Any]) -> Mapping[str, str]:
    return cast(Mapping[str, str], (body.get("metadata") or {}).get("labels") or {})


# Phase 8: history


@dataclass(frozen=True)
class History:
    records: tuple[FailoverRecord, ...]
    routed: EventSpec | None  # the newest change of primary became routed now


def stamp_history(j: Judgement, roles: Roles) -> History:
    pod = j.by_name.get(roles.primary)
    ip = pod.pod_ip if pod is not None else ""
    records, routed = _mark_routed(roles.history, roles.primary, ip, j.observed.primary_endpoints, j.stamp)
    if j.acting:
        alive = {p.uid for p in j.pods} | {e["uid"] for e in j.unreachable_pods}
        records = _mark_fenced(records, alive, j.stamp)
    return History(records, routed)


def _mark_routed(
    history: tuple[FailoverRecord, ...], primary: str, pod_ip: str, endpoints: frozenset[str], now: str
) -> tuple[tuple[FailoverRecord, ...], EventSpec | None]:
    """Fill routedAt of the newest change of primary once <name>-primary routes to exactly the new primary."""
    if not history or history[-1].get("routedAt") or history[-1]["to"] != primary:
        return history, None
    if not pod_ip or endpoints != {pod_ip}:
        return history, None
    last = history[-1].copy()
    last["routedAt"] = now
    failover = last["kind"] == ChangeKind.FAILOVER
    reason = EventReason.FAILOVER_COMPLETED if failover else EventReason.SWITCHOVER_COMPLETED
    message = f"{primary} is primary and routed (term {last['term']}, from {last['from'] or '-'})"
    return (*history[:-1], last), EventSpec("Normal", reason, message)


def _mark_fenced(
    history: tuple[FailoverRecord, ...], uids: Collection[str], now: str
) -> tuple[FailoverRecord, ...]:
    """A fence is done once the pod it names (by uid) is gone from the API and proven stopped: a pod that
    vanished on an unreachable node (in `uids` too) may still run."""
    return tuple(
        _fenced(r, now)
        if r.get("fenceUid") and not r.get("fencedAt") and r.get("fenceUid") not in uids
        else r
        for r in history
    )


def _fenced(record: FailoverRecord, now: str) -> FailoverRecord:
    done = record.copy()
    done["fencedAt"] = now
    return done


# Phase 9: tally


@dataclass(frozen=True)
class Tally:
    active: tuple[PodView, ...]  # not being deleted
    serving: int
    primary_serving: bool  # always True in ActiveActive mode
    unhealthy: tuple[str, ...]
    ready: bool
    available: bool
    progress: str  # names.Reason of the work in progress, or ""
    summary: str
    waiting: str = ""  # why some pods are not recreated yet


def tally(j: Judgement, rollout: Rollout, roles: Roles, labels: Labels, work: PodWork) -> Tally:
    replicas = j.spec.replicas
    active = tuple(p for p in j.pods if not p.deleting)
    serving = sum(1 for p in active if labels.serving[p.name])
    primary_serving = not j.spec.primary_replica or (
        bool(roles.primary) and labels.serving.get(roles.primary, False)
    )
    all_good = (
        len(rollout.in_range) == replicas
        and not rollout.outdated
        and len(active) == replicas
        and all(labels.serving[p.name] or labels.roles[p.name] == names.ROLE_FENCED for p in rollout.in_range)
        and serving == replicas
    )
    bad = (Health.FAILED, Health.LOST, Health.DEGRADED)
    return Tally(
        active=active,
        serving=serving,
        primary_serving=primary_serving,
        unhealthy=tuple(p.name for p in active if j.health(p) in bad),
        ready=all_good and primary_serving,
        available=serving > 0 and primary_serving,
        progress=_progress(j, rollout, work, active),
        summary=f"{serving}/{replicas} replicas serving",
        waiting=work.waiting,
    )


def _progress(j: Judgement, rollout: Rollout, work: PodWork, active: Sequence[PodView]) -> str:
    if work.progress:
        return work.progress
    if len(rollout.in_range) != j.spec.replicas or len(active) != len(rollout.in_range):
        return Reason.SCALING
    if any(j.health(p) == Health.STARTING for p in active):
        return Reason.STARTING
    return ""


# Phase 10: report


@dataclass(frozen=True)
class Report:
    conditions: tuple[cond.Condition, ...]
    phase: Phase
    events: tuple[EventSpec, ...]


def report(
    j: Judgement,
    rollout: Rollout,
    roles: Roles,
    history: History,
    counts: Tally,
    checkpoints: Checkpoints,
    traffic: TrafficWork,
) -> Report:
    node_loss, node_events = _node_loss_condition(j.held, j.previous)
    failure, failure_events = _replica_failure_condition(j.observed.create_failures, j.previous)
    conditions = [*_workload_conditions(j, counts), node_loss, failure, traffic.condition]
    if j.spec.health.metrics is not None:
        conditions.append(_metrics_condition(j, j.spec.health.metrics))
    if checkpoints.plan.condition is not None:
        conditions.append(checkpoints.plan.condition)
    if j.spec.primary_replica:
        conditions += _primary_conditions(roles, history)
    phase, phase_events = _phase(j, rollout, counts)
    events = (
        *node_events,
        *failure_events,
        *_traffic_events(j, traffic.condition),
        *_usage_events(j),
        *_kept_serving_events(j),
        *phase_events,
    )
    return Report(tuple(conditions), phase, events)


# A new pod has no sample until metrics-server scraped it twice: not a gap to report before this much more.
FIRST_SAMPLE_GRACE_SECONDS = 30


def _metrics_condition(j: Judgement, spec: MetricsHealthSpec) -> cond.Condition:
    available = ConditionType.METRICS_AVAILABLE
    if j.observed.metrics_problem:
        message = f"{j.observed.metrics_problem}; no pod is judged by its usage"
        return cond.Condition(
            available, False, Reason.METRICS_UNAVAILABLE, bounded(message, FAILURE_MESSAGE_LIMIT)
        )
    rejected = j.observed.metrics_rejected
    grace = timedelta(seconds=spec.stale_after_seconds + FIRST_SAMPLE_GRACE_SECONDS)
    running = [p for p in j.pods if not p.deleting and p.phase == "Running"]
    unmeasured = [
        p.name
        for p in running
        if j.now - (p.started_at or p.created_at or j.now) > grace
        and not fresh(j.observed.usage.get(p.name), p, spec, j.now)
    ]
    if rejected:
        said = "; ".join(f"{name}: {why}" for name, why in sorted(rejected.items()))
        message = f"PodMetrics ignored, judged by their probes only: {said}"
        return cond.Condition(
            available, False, Reason.METRICS_MALFORMED, bounded(message, FAILURE_MESSAGE_LIMIT)
        )
    if unmeasured:
        message = (
            f"no sample newer than {spec.stale_after_seconds}s of {', '.join(sorted(unmeasured))}: "
            "judged by their probes only"
        )
        return cond.Condition(available, False, Reason.METRICS_STALE, bounded(message, FAILURE_MESSAGE_LIMIT))
    return cond.Condition(available, True, Reason.METRICS_FRESH, "")


def _usage_events(j: Judgement) -> list[EventSpec]:
    """One Warning when a pod is drained, and one when it is to be replaced, for its measured usage."""
    before = {p.get("name"): p.get("health") for p in j.previous.get("pods") or []}
    return [
        EventSpec("Warning", EventReason.USAGE_BREACH, f"{name}: {verdict.reason}")
        for name, verdict in sorted(j.verdicts.items())
        if verdict.breached_at is not None and before.get(name) != verdict.health
    ]


def _kept_serving_events(j: Judgement) -> list[EventSpec]:
    """One Warning when pods over a usage threshold are kept serving (the disruption budget has no room)."""
    before = {p.get("name"): str(p.get("reason") or "") for p in j.previous.get("pods") or []}
    kept = [
        f"{name}: {verdict.reason}"
        for name, verdict in sorted(j.verdicts.items())
        if KEPT_SERVING in verdict.reason and KEPT_SERVING not in before.get(name, "")
    ]
    if not kept:
        return []
    message = bounded("over a usage threshold, not drained: " + "; ".join(kept), FAILURE_MESSAGE_LIMIT)
    return [EventSpec("Warning", EventReason.USAGE_DRAIN_LIMITED, message)]


def _traffic_events(j: Judgement, condition: cond.Condition) -> list[EventSpec]:
    """One Warning when the policy stops being (or never was) in force, not one per reconcile; a first
    read still under way is not news, and the Warning waits for what it finds."""
    before = [c for c in j.previous.get("conditions") or [] if c.get("type") == condition.type]
    said = (
        before
        and before[0].get("status") == "False"
        and before[0].get("reason") != Reason.TRAFFIC_LOOKUP_PENDING
    )
    if condition.status or condition.reason == Reason.TRAFFIC_LOOKUP_PENDING or said:
        return []
    return [
        EventSpec("Warning", EventReason.TRAFFIC_POLICY_NOT_READY, f"{condition.reason}: {condition.message}")
    ]


def _workload_conditions(j: Judgement, counts: Tally) -> list[cond.Condition]:
    ready, available, summary, progress = counts.ready, counts.available, counts.summary, counts.progress
    progressing: str = Reason.PAUSED
    if not j.spec.paused:
        progressing = (progress or Reason.STABLE) if j.acting else Reason.INVALID_SPEC
    if available:
        serving = Reason.SERVING
    else:
        serving = Reason.PRIMARY_NOT_SERVING if counts.serving else Reason.NO_SERVING_PODS
    # Bounded: at hundreds of failed pods the whole list would pass the CRD's cap and fail every write.
    unhealthy = bounded(
        ", ".join(f"{n}: {j.verdicts[n].health.value} ({j.verdicts[n].reason})" for n in counts.unhealthy),
        FAILURE_MESSAGE_LIMIT,
    )
    ready_reason = Reason.ALL_REPLICAS_READY if ready else Reason.NOT_ALL_REPLICAS_READY
    return [
        cond.Condition(ConditionType.READY, ready, ready_reason, summary),
        cond.Condition(ConditionType.AVAILABLE, available, serving, summary),
        cond.Condition(
            ConditionType.PROGRESSING,
            bool(progress) and j.acting,
            progressing,
            (f"{progress}: {summary}" + (f"; {counts.waiting}" if counts.waiting else ""))
            if progress
            else "",
        ),
        cond.Condition(
            ConditionType.DEGRADED,
            bool(counts.unhealthy),
            Reason.PODS_UNHEALTHY if counts.unhealthy else Reason.ALL_HEALTHY,
            unhealthy,
        ),
        cond.Condition(
            ConditionType.INVALID_SPEC,
            bool(j.problems),
            Reason.OPERATOR_VALIDATION_FAILED if j.problems else Reason.SPEC_VALID,
            bounded("; ".join(j.problems), FAILURE_MESSAGE_LIMIT),
        ),
    ]


def _node_loss_condition(
    held: NodeLossHold | None, previous: Mapping[str, Any]
) -> tuple[cond.Condition, list[EventSpec]]:
    was_held = cond.is_true(previous.get("conditions") or [], ConditionType.NODE_LOSS_SUSPENDED)
    events = []
    if held is not None and not was_held:
        events.append(EventSpec("Warning", EventReason.NODE_LOSS_SUSPENDED, held.message))
    elif was_held and held is None:
        events.append(EventSpec("Normal", EventReason.NODE_LOSS_RESUMED, "node heartbeats are trusted again"))
    if held is None:
        return cond.Condition(ConditionType.NODE_LOSS_SUSPENDED, False, Reason.NODES_TRUSTED), events
    return cond.Condition(ConditionType.NODE_LOSS_SUSPENDED, True, held.reason, held.message), events


def _replica_failure_condition(
    failures: Mapping[str, str], previous: Mapping[str, Any]
) -> tuple[cond.Condition, list[EventSpec]]:
    """As Deployment's ReplicaFailure: the server's own words; one Event when creates start failing, not
    one per retry."""
    if not failures:
        return cond.Condition(ConditionType.REPLICA_FAILURE, False, Reason.CREATES_ACCEPTED), []
    message = "; ".join(f"{what}: {why}" for what, why in sorted(failures.items()))
    message = bounded(message, FAILURE_MESSAGE_LIMIT)
    said = cond.is_true(previous.get("conditions") or [], ConditionType.REPLICA_FAILURE)
    events = [] if said else [EventSpec("Warning", EventReason.FAILED_CREATE, message)]
    return cond.Condition(ConditionType.REPLICA_FAILURE, True, Reason.FAILED_CREATE, message), events


def bounded(text: str, limit: int) -> str:
    """At most `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - 40)  # room for the tail below
    return f"{text[:keep]} ... ({len(text) - keep} more characters)"


def _primary_conditions(roles: Roles, history: History) -> list[cond.Condition]:
    records, throttled, primary = history.records, roles.decision.throttled, roles.primary
    in_flight = bool(records) and not records[-1].get("routedAt")
    failing_over = Reason.THROTTLED if throttled else Reason.IN_PROGRESS if in_flight else Reason.IDLE
    promoting = f"promoting {records[-1]['to']} (term {records[-1]['term']})" if in_flight else ""
    return [
        cond.Condition(
            ConditionType.FAILING_OVER, in_flight or bool(throttled), failing_over, throttled or promoting
        ),
        cond.Condition(
            ConditionType.PRIMARY_UNAVAILABLE,
            not primary,
            Reason.PRIMARY_ELECTED if primary else Reason.NO_HEALTHY_REPLICA,
            "" if primary else "no healthy pod can be primary",
        ),
    ]


def _phase(j: Judgement, rollout: Rollout, counts: Tally) -> tuple[Phase, list[EventSpec]]:
    if j.problems:
        said = cond.is_true(j.previous.get("conditions") or [], ConditionType.INVALID_SPEC)
        events = [] if said else [EventSpec("Warning", EventReason.INVALID_SPEC, "; ".join(j.problems))]
        return Phase.INVALID, events
    if j.spec.paused:
        return Phase.PAUSED, []
    if counts.ready:
        return Phase.READY, []
    if counts.available:
        return (Phase.UPDATING if rollout.outdated else Phase.DEGRADED), []
    starting = all(j.health(p) == Health.STARTING for p in counts.active)
    return (Phase.PENDING if starting else Phase.UNAVAILABLE), []


# The status, and decide itself


def build_status(
    j: Judgement,
    roles: Roles,
    labels: Labels,
    history: History,
    checkpoints: Checkpoints,
    counts: Tally,
    outcome: Report,
    traffic: TrafficWork,
) -> FtsStatus:
    fts, active = j.observed.fts, counts.active
    return {
        "observedGeneration": fts.generation,
        "phase": outcome.phase,
        "replicas": len(active),
        "readyReplicas": sum(1 for p in active if p.ready),
        "servingReplicas": counts.serving,
        "updatedReplicas": sum(1 for p in active if j.updated(p)),
        "selector": f"{names.LABEL_SERVICE}={fts.name}",
        "primary": roles.primary,
        "term": roles.term,
        "pods": _status_pods(j, labels, traffic),
        "failovers": list(history.records),
        "failoverTimes": list(roles.failover_times),
        "unreachablePods": list(j.unreachable_pods),
        "checkpoints": checkpoints.plan.history,
        "lastSuccessfulCheckpoint": checkpoints.plan.last_successful,
        "checkpointSchedule": checkpoints.plan.schedule_state,
        "recovery": checkpoints.recovery,
        "switchover": roles.switchover,
        "conditions": cond.merge_conditions(
            j.previous.get("conditions") or [], outcome.conditions, generation=fts.generation, now=j.stamp
        ),
    }


def _status_pods(j: Judgement, labels: Labels, traffic: TrafficWork) -> list[PodStatus]:
    before = {p.get("name"): p for p in j.previous.get("pods") or []}
    entries: list[PodStatus] = []
    for pod in sorted(j.pods, key=lambda p: (p.ordinal, p.name)):
        verdict = j.verdicts[pod.name]
        old = before.get(pod.name) or {}
        node = j.observed.nodes.get(pod.node_name)
        entry: PodStatus = {
            "name": pod.name,
            "node": pod.node_name,
            "zone": node.zone if node else "",
            "role": labels.roles[pod.name],
            "health": verdict.health,
            "serving": labels.serving[pod.name],
            "since": old.get("since", j.stamp) if old.get("health") == verdict.health else j.stamp,
            "reason": bounded(verdict.reason, REASON_LIMIT),
            "updated": j.updated(pod),
        }
        if pod.annotations.get(names.ANNOTATION_RESTORED_FROM):
            entry["restoredFrom"] = pod.annotations[names.ANNOTATION_RESTORED_FROM]
        if pod.name in traffic.weights:
            entry["weight"] = traffic.weights[pod.name]
        if pod.name in traffic.sampled_at:
            entry["loadSampledAt"] = format_time(traffic.sampled_at[pod.name])
        if pod.name in j.breaches:
            entry["breachSince"] = format_time(j.breaches[pod.name].since)
            entry["breachSampledAt"] = format_time(j.breaches[pod.name].sampled_at)
        entries.append(entry)
    return entries


def _canonical(status: Mapping[str, Any]) -> str:
    return json.dumps(status, sort_keys=True, default=str)


def _requeue_after(
    j: Judgement, roles: Roles, checkpoints: Checkpoints, counts: Tally, traffic: TrafficWork
) -> float | None:
    deadlines = [v.deadline for v in j.verdicts.values() if v.deadline is not None]
    if traffic.next_step is not None:
        deadlines.append(traffic.next_step)
    if j.spec.health.metrics is not None or j.spec.traffic.follow_load is not None:
        # new samples are read when the resource is looked at
        deadlines.append(j.now + timedelta(seconds=USAGE_LOOK_SECONDS))
    if roles.decision.retry_at is not None:
        deadlines.append(roles.decision.retry_at)
    if checkpoints.plan.next_look is not None:
        deadlines.append(checkpoints.plan.next_look)
    if j.acting and counts.progress:
        deadlines.append(j.now + timedelta(seconds=PROGRESS_RECHECK_SECONDS))
    if not deadlines:
        return None
    return max(0.1, (min(deadlines) - j.now).total_seconds() + 0.1)


# A pod that carries a newer term than the status was labelled by a writer who saw a later status: this
# view is behind (another operator, or our own write whose watch event has not arrived). Acting on it
# could label pods with the older term; the newer status is on its way, so wait for it, for a while
# (Observed.behind_too_long): a workload may write its own pod's term, and that news never comes.
VIEW_BEHIND_RETRY_SECONDS: Final = 0.5


def newest_pod_term(observed: Observed) -> int:
    return max((p.term for p in observed.pods), default=0)


def view_behind(observed: Observed) -> bool:
    """A status without a term is new, or was wiped by hand: nothing to wait for. Its first election's term
    exceeds every pod's (decide_roles), and its status write, made with the resourceVersion, guards it."""
    term = int(observed.fts.status.get("term") or 0)
    return 0 < term < newest_pod_term(observed)


def decide(observed: Observed) -> Plan:
    if (view_behind(observed) and not observed.behind_too_long) or observed.primary_unseen:
        return Plan(
            status=cast(FtsStatus, dict(observed.fts.status)), requeue_after=VIEW_BEHIND_RETRY_SECONDS
        )
    j = judge(observed)
    rollout = plan_rollout(j)
    roles = decide_roles(j, rollout)
    checkpoints = plan_checkpoints(j, roles)
    labels = assign_labels(j, roles)
    work = plan_pods(j, rollout, roles, labels, checkpoints)
    traffic = plan_traffic(j, labels)
    owned = plan_owned(j, roles, labels, traffic)
    history = stamp_history(j, roles)
    counts = tally(j, rollout, roles, labels, work)
    outcome = report(j, rollout, roles, history, counts, checkpoints, traffic)
    status = build_status(j, roles, labels, history, checkpoints, counts, outcome, traffic)
    routed = [history.routed] if history.routed is not None else []
    return Plan(
        status=status,
        write_status=_canonical(status) != _canonical({k: j.previous.get(k) for k in status}),
        patches=list(labels.patches),
        routing=owned.routing,
        owned_deletes=list(owned.deletes),
        deletes=list(work.deletes),
        creates=list(work.creates),
        owned_creates=list(owned.creates),
        applies=list(owned.applies),
        metadata_removals=list(owned.removals),
        events=[*roles.events, *checkpoints.events, *work.events, *routed, *outcome.events],
        hooks=list(work.hooks),
        hooks_term=work.hooks_term,
        job_creates=list(work.job_creates),
        job_deletes=list(work.job_deletes),
        requeue_after=_requeue_after(j, roles, checkpoints, counts, traffic),
        traffic_applies=list(traffic.applies),
        traffic_deletes=list(traffic.deletes),
        promotion=str(roles.decision.reason) if roles.decision.promoted else "",
        routed=history.routed is not None,
    )
