"""Who is primary: the pure decisions of election, failover, switchover and their rate limits
(PrimaryReplica mode). Every change of primary raises the term by exactly one."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ftso import names
from ftso.api.spec import FailoverSpec
from ftso.health import Verdict
from ftso.model import PodView, format_time, parse_time
from ftso.names import ChangeKind, Health, Promotion, SwitchoverResult
from ftso.status import FailoverRecord, SwitchoverAnswer


@dataclass(frozen=True)
class RoleDecision:
    primary: str
    term: int
    # None when the primary stays.
    reason: Promotion | None = None
    previous: str = ""
    detail: str = ""  # what was wrong with the previous primary
    detected_at: datetime | None = None
    throttled: str = ""  # why a needed failover waits
    retry_at: datetime | None = None  # when to look again (a delay or a rate limit runs out)
    switchover: SwitchoverAnswer | None = field(default=None)  # the answer to a new switchover request
    # The previous primary was failed over from for its measured usage: alive and Ready, it is told by the
    # term and its labels, as in a switchover, and stays a replica with the lineage's data; never fenced.
    demoted: bool = False

    @property
    def promoted(self) -> bool:
        return bool(self.primary) and self.primary != self.previous and self.reason is not None

    @property
    def planned(self) -> bool:
        return self.reason in names.PLANNED


# Set by the workload, so untrusted: anything but a finite number within this range is ignored.
ANNOTATION_LIMIT = 1e15


def annotation_number(pod: PodView, annotation: str) -> float | None:
    """The annotation's number, or None when it is missing, garbage, nan, infinite or absurd."""
    raw = pod.annotations.get(annotation)
    if raw is None or len(raw) > 64:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and abs(value) <= ANNOTATION_LIMIT else None


def bad_annotations(pods: Iterable[PodView]) -> list[str]:
    """Failover annotations present but unusable, as "<pod>: <annotation>=<value>" (value cut short)."""
    return [
        f"{p.name}: {a}={p.annotations[a][:32]!r}"
        for p in pods
        for a in (names.ANNOTATION_FAILOVER_PRIORITY, names.ANNOTATION_REPLICATION_LAG)
        if a in p.annotations and annotation_number(p, a) is None
    ]


@dataclass(frozen=True)
class Candidacy:
    """Who may not, or should rather not, become primary."""

    # Fenced former primaries (labelled fenced, or named by uid in a pending fence): never a candidate, since
    # they may hold writes the new lineage never had.
    barred: Collection[str] = frozenset()
    # Pods on a suspect node (it missed a heartbeat renewal, or is NotReady): promoted only when no pod on a
    # trusted node can be, since one that is about to be lost would need a second failover.
    suspect: Collection[str] = frozenset()
    # Pods on an unreachable node (not proven stopped) that may hold the data: a primary among them stays
    # primary when nobody can take over, since fencing it would throw away data that may come back.
    stranded: Collection[str] = frozenset()


def candidate_rank(
    pod: PodView, suspect: Collection[str] = frozenset()
) -> tuple[bool, float, bool, float, int]:
    """Lower is better: a trusted node first, then the workload's priority (0 when unset), then a known
    replication lag before an unknown one, the least lag first, then the ordinal: a fresh empty replica never
    wins for lack of a lag."""
    priority = annotation_number(pod, names.ANNOTATION_FAILOVER_PRIORITY) or 0.0
    lag = annotation_number(pod, names.ANNOTATION_REPLICATION_LAG)
    return (pod.name in suspect, -priority, lag is None, lag or 0.0, pod.ordinal)


def best_candidate(
    pods: Iterable[PodView],
    verdicts: Mapping[str, Verdict],
    *,
    replicas: int,
    exclude: str = "",
    candidacy: Candidacy = Candidacy(),
) -> PodView | None:
    candidates = [
        p
        for p in pods
        if p.name != exclude
        and p.name not in candidacy.barred
        and 0 <= p.ordinal < replicas
        and verdicts[p.name].health == Health.HEALTHY
    ]
    return min(candidates, key=lambda p: candidate_rank(p, candidacy.suspect), default=None)


def primary_failure(
    pod: PodView | None, verdict: Verdict | None, failover: FailoverSpec, now: datetime
) -> tuple[str, datetime | None, datetime | None]:
    """(what is wrong or "", since when, when to look again) for the current primary."""
    if pod is None or verdict is None:
        return "pod is gone", now, None
    if by_usage(verdict) and verdict.breached_at is not None:  # over a usage threshold
        due = verdict.breached_at + timedelta(seconds=failover.delay_seconds)
        if now >= due:
            return verdict.reason, verdict.breached_at, None
        return "", None, due
    if verdict.gone:
        return verdict.reason, now, None
    if verdict.health in (Health.DEGRADED, Health.STARTING):
        since = pod.ready_seen_at or now  # by the operator's clock: a kubelet's may be off either way
        due = since + timedelta(seconds=failover.delay_seconds)
        if now >= due:
            return f"not Ready for over {failover.delay_seconds}s", since, None
        return "", None, due
    return "", None, None


def _judge_primary(
    pod: PodView | None, verdict: Verdict | None, term: int, failover: FailoverSpec, now: datetime
) -> tuple[str, datetime | None, datetime | None]:
    problem, since, due = primary_failure(pod, verdict, failover, now)
    if problem and pod is not None and pod.term < term and not hard_failure(pod, verdict):
        # This view of the pod predates its promotion (another writer's, or our write's event is on its way):
        # judged unready on old news, a just-elected primary would be failed over at once. Its labels first.
        return "", None, None
    return problem, since, due


def hard_failure(pod: PodView | None, verdict: Verdict | None) -> bool:
    """The primary cannot come back: deleted, deleting, terminated, or on a lost node. Its measured usage is
    never one: the pod is alive, and its load moves with the primary, so it is a soft failure under the limits.
    Nor is staying unready, however long: its process runs and may turn Ready again."""
    return pod is None or verdict is None or (verdict.gone and not by_usage(verdict) and not verdict.unready)


def by_usage(verdict: Verdict | None) -> bool:
    """Judged by its measured usage (health.metrics), not by a probe or its node."""
    return verdict is not None and verdict.breached_at is not None


def failover_times(
    kept: Iterable[object], history: Iterable[FailoverRecord], failover: FailoverSpec, now: datetime
) -> tuple[datetime, ...]:
    """When the unplanned failovers the limits count were decided, oldest first: those status keeps for the
    limits, and those the history still shows. Only the newest `maxPerHour` of the window the limits look at
    (the last hour, or minIntervalSeconds if longer) are kept: all the limits need, so the history's bound
    and the limit can never disagree."""
    window = timedelta(seconds=max(3600, failover.min_interval_seconds))

    def counted(raws: Iterable[object]) -> Counter[datetime]:
        return Counter(t for raw in raws if (t := parse_time(raw)) is not None and t > now - window)

    recorded = counted(h.get("decidedAt") for h in history if h.get("kind") == ChangeKind.FAILOVER)
    times = counted(kept) | recorded  # a record is also kept: counted once
    return tuple(sorted(times.elements())[-failover.max_per_hour :])


def throttle(times: Sequence[datetime], failover: FailoverSpec, now: datetime) -> tuple[str, datetime | None]:
    """Why an unplanned failover must wait now, and until when; ("", None) when it may go. `times`: when
    the unplanned failovers were decided, oldest first (see failover_times)."""
    hour_ago = now - timedelta(hours=1)
    recent = [t for t in times if t > hour_ago]
    if len(recent) >= failover.max_per_hour:
        until = recent[-failover.max_per_hour] + timedelta(hours=1)
        return (
            f"{len(recent)} failovers in the last hour (failover.maxPerHour is {failover.max_per_hour}); "
            f"next allowed at {format_time(until)} (limits apply to an unready primary, not a gone one)",
            until,
        )
    if times and now < times[-1] + timedelta(seconds=failover.min_interval_seconds):
        until = times[-1] + timedelta(seconds=failover.min_interval_seconds)
        return (
            f"last failover at {format_time(times[-1])} (failover.minIntervalSeconds is "
            f"{failover.min_interval_seconds}); next allowed at {format_time(until)} (limits apply to an "
            "unready primary, not a gone one)",
            until,
        )
    return "", None


def _answer(request: str, result: SwitchoverResult, message: str, now: datetime) -> SwitchoverAnswer:
    return {"request": request, "result": result, "message": message, "at": format_time(now)}


def decide_switchover(
    request: str,
    *,
    primary: str,
    term: int,
    pods: Mapping[str, PodView],
    verdicts: Mapping[str, Verdict],
    replicas: int,
    now: datetime,
    candidacy: Candidacy = Candidacy(),
) -> RoleDecision:
    """A planned change of primary, asked for by the annotation `ftso.dev/switchover: <pod>[@<nonce>]`
    (an empty pod name asks for the best healthy replica)."""
    target = request.split("@", 1)[0].strip()
    if target and target == primary:
        return RoleDecision(
            primary,
            term,
            switchover=_answer(request, SwitchoverResult.COMPLETED, f"{target} is already primary", now),
        )
    if target:
        pod = pods.get(target)
        verdict = verdicts.get(target)
        if pod is None or verdict is None:
            message = f"refused: {target} is not a pod of this service"
        elif target in candidacy.barred:
            message = f"refused: {target} is fenced (a failed former primary)"
        elif not 0 <= pod.ordinal < replicas or verdict.health != Health.HEALTHY:
            health = verdict.health.value + (f" ({verdict.reason})" if verdict.reason else "")
            message = f"refused: {target} is not a healthy replica (it is {health})"
        else:
            message = ""
        if message:
            return RoleDecision(
                primary, term, switchover=_answer(request, SwitchoverResult.REFUSED, message, now)
            )
        chosen = target
    else:
        best = best_candidate(
            pods.values(), verdicts, replicas=replicas, exclude=primary, candidacy=candidacy
        )
        if best is None:
            return RoleDecision(
                primary,
                term,
                switchover=_answer(
                    request, SwitchoverResult.REFUSED, "refused: no healthy replica to promote", now
                ),
            )
        chosen = best.name
    return RoleDecision(
        chosen,
        term + 1,
        Promotion.SWITCHOVER,
        primary,
        detected_at=now,
        switchover=_answer(
            request, SwitchoverResult.COMPLETED, f"{chosen} promoted in place of {primary or 'nobody'}", now
        ),
    )


def _fail_over(
    best: PodView | None, *, primary: str, term: int, problem: str, at: datetime, loaded: bool
) -> RoleDecision:
    """To the best candidate. Without one the primary is lost, unless only its load is wrong: a busy primary
    beats none. One failed over from for its load is demoted, not fenced (`demoted`)."""
    if best is None and loaded:
        return RoleDecision(primary, term)
    if best is None:
        return RoleDecision("", term, Promotion.LOST if primary else None, primary, detail=problem)
    return RoleDecision(
        best.name,
        term + 1,
        Promotion.FAILOVER if term > 0 else Promotion.ELECTED,
        primary,
        detail=problem,
        detected_at=at,
        demoted=loaded,
    )


def decide_primary(
    *,
    primary: str,
    term: int,
    pods: Mapping[str, PodView],
    verdicts: Mapping[str, Verdict],
    replicas: int,
    updated: Mapping[str, bool],
    rollout_wants_primary: bool,
    failover: FailoverSpec,
    failover_times: Sequence[datetime],
    now: datetime,
    switchover_request: str = "",
    switchover_answered: str = "",
    candidacy: Candidacy = Candidacy(),
) -> RoleDecision:
    current = pods.get(primary) if primary else None
    problem, since, due = (
        _judge_primary(current, verdicts.get(primary), term, failover, now) if primary else ("", None, None)
    )

    def pick(pool: Iterable[PodView]) -> PodView | None:
        return best_candidate(pool, verdicts, replicas=replicas, exclude=primary, candidacy=candidacy)

    if not primary or problem:
        # Anti-flapping is for soft failures only (an unready primary may come back); when the primary is
        # gone, waiting only guarantees an outage, so a hard failure fails over whatever the limits say.
        if term > 0 and primary and not hard_failure(current, verdicts.get(primary)):
            why, until = throttle(failover_times, failover, now)
            if why:
                return RoleDecision(primary, term, None, primary, throttled=why, retry_at=until)
        best = pick(pods.values())
        if best is None and primary in candidacy.stranded:
            return RoleDecision(primary, term, retry_at=due)
        loaded = bool(primary) and by_usage(verdicts.get(primary))
        return _fail_over(best, primary=primary, term=term, problem=problem, at=since or now, loaded=loaded)

    if switchover_request and switchover_request != switchover_answered:
        return decide_switchover(
            switchover_request,
            primary=primary,
            term=term,
            pods=pods,
            verdicts=verdicts,
            replicas=replicas,
            now=now,
            candidacy=candidacy,
        )
    if current is not None and not 0 <= current.ordinal < replicas:
        best = pick(pods.values())
        if best is not None:
            return RoleDecision(best.name, term + 1, Promotion.SCALE_DOWN, primary, detected_at=now)
    elif rollout_wants_primary:
        best = pick(p for p in pods.values() if updated.get(p.name))
        if best is not None:
            return RoleDecision(best.name, term + 1, Promotion.ROLLING_UPDATE, primary, detected_at=now)
    return RoleDecision(primary, term, retry_at=due)
