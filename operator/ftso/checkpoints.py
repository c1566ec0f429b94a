"""Checkpoints, decided purely: when one is due, which pod it copies, the Job that takes it, what the history
keeps, and which checkpoint a new pod restores from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ftso import conditions as cond
from ftso import names
from ftso.api.spec import CHECKPOINT_HISTORY_LIMIT, CheckpointSpec, FtsSpec
from ftso.health import Verdict
from ftso.model import PodView, format_time, parse_time
from ftso.names import CheckpointResult, ConditionType, EventReason, Health, Reason
from ftso.schedule import CronError, latest_at_or_before, next_after, parse_cron
from ftso.status import CheckpointRecord, Recovery, ScheduleState, checkpoint_records, schedule_state

SKIPPED_RETRY_SECONDS = 10  # no healthy pod to copy: look again soon, a replacement may be up by then


@dataclass(frozen=True)
class JobView:
    name: str
    checkpoint_id: str
    result: str  # Running, Succeeded or Failed
    reason: str = ""
    finished_at: datetime | None = None


def job_view(raw: Mapping[str, Any]) -> JobView:
    metadata = raw.get("metadata") or {}
    status = raw.get("status") or {}
    result, reason, finished = CheckpointResult.RUNNING, "", None
    for c in status.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") in ("Complete", "SuccessCriteriaMet"):
            result, finished = CheckpointResult.SUCCEEDED, parse_time(c.get("lastTransitionTime"))
        elif c.get("type") in ("Failed", "FailureTarget"):
            result, reason = CheckpointResult.FAILED, str(c.get("reason") or "Failed")
            finished = parse_time(c.get("lastTransitionTime"))
    return JobView(
        name=str(metadata.get("name", "")),
        checkpoint_id=str((metadata.get("labels") or {}).get(names.LABEL_CHECKPOINT, "")),
        result=result,
        reason=reason,
        finished_at=finished or parse_time(status.get("completionTime")),
    )


@dataclass
class CheckpointPlan:
    history: list[CheckpointRecord]
    schedule_state: ScheduleState
    last_successful: str = ""
    start: CheckpointRecord | None = None  # the history entry of a checkpoint to start now
    delete_jobs: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    condition: cond.Condition | None = None
    next_look: datetime | None = None


def latest_slot(
    spec: CheckpointSpec, base: datetime, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """(the newest scheduled time in (base, now], or None; the next scheduled time after now)."""
    if spec.interval_seconds > 0:
        step = timedelta(seconds=spec.interval_seconds)
        if now < base + step:
            return None, base + step
        count = int((now - base) / step)
        slot = base + step * count
        return slot, slot + step
    if not spec.schedule:
        return None, None
    try:
        cron = parse_cron(spec.schedule)
        first = next_after(cron, base)
        if first > now:
            return None, first
        # Missed slots collapse into the newest one.
        return latest_at_or_before(cron, now), next_after(cron, now)
    except CronError:
        return None, None


def choose_source(
    spec: CheckpointSpec, pods: Sequence[PodView], verdicts: Mapping[str, Verdict], primary: str
) -> PodView | None:
    healthy = sorted((p for p in pods if verdicts[p.name].health == Health.HEALTHY), key=lambda p: p.ordinal)
    primary_pod = next((p for p in healthy if p.name == primary), None)
    if spec.source == "Primary":
        return primary_pod
    replicas = [p for p in healthy if p.name != primary]
    return replicas[0] if replicas else primary_pod


def _unique_id(now: datetime, taken: set[str]) -> str:
    base = now.strftime("%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


@dataclass(frozen=True)
class CheckpointInputs:
    """What the checkpoint decision reads besides the spec."""

    name: str
    created_at: datetime
    request: str  # the ftso.dev/checkpoint annotation
    previous: Mapping[str, Any]  # the status as read
    jobs: Sequence[JobView]
    pods: Sequence[PodView]
    verdicts: Mapping[str, Verdict]
    primary: str
    term: int
    now: datetime
    acting: bool


def decide_checkpoints(spec: FtsSpec, given: CheckpointInputs) -> CheckpointPlan:
    plan = CheckpointPlan(
        history=checkpoint_records(given.previous), schedule_state=schedule_state(given.previous)
    )
    by_name = {j.name: j for j in given.jobs}
    plan.events += _follow_jobs(plan.history, by_name, given.now)
    plan.events += _fail_orphans(plan.history, by_name, {p.name for p in given.pods}, given.now)
    if spec.checkpoint is not None and given.acting:
        _start_due(plan, spec.checkpoint, given)
        # A started checkpoint whose Job is missing (we stopped between writing status and creating it).
        missing = [
            e for e in plan.history if e["result"] == CheckpointResult.RUNNING and e["job"] not in by_name
        ]
        plan.start = plan.start or next(iter(missing), None)
    _retain(plan, spec.checkpoint, given.now)
    known = {e["job"] for e in plan.history}
    plan.delete_jobs += [
        j.name for j in given.jobs if j.name not in known and j.result != CheckpointResult.RUNNING
    ]
    succeeded = [e for e in plan.history if e["result"] == CheckpointResult.SUCCEEDED]
    plan.last_successful = (
        succeeded[-1]["id"] if succeeded else str(given.previous.get("lastSuccessfulCheckpoint") or "")
    )
    plan.condition = _condition(plan.history, plan.last_successful)
    return plan


def _follow_jobs(
    history: list[CheckpointRecord], jobs: Mapping[str, JobView], now: datetime
) -> list[tuple[str, str, str]]:
    """What the Jobs say about the checkpoints still running; the history entries take their results."""
    events: list[tuple[str, str, str]] = []
    for entry in history:
        job = jobs.get(entry["job"])
        if (
            entry["result"] != CheckpointResult.RUNNING
            or job is None
            or job.result == CheckpointResult.RUNNING
        ):
            continue
        finished = job.finished_at or now
        started = parse_time(entry.get("startedAt")) or finished
        entry["result"] = job.result
        entry["reason"] = job.reason
        entry["finishedAt"] = format_time(finished)
        entry["durationSeconds"] = max(0, int((finished - started).total_seconds()))
        if job.result == CheckpointResult.SUCCEEDED:
            events.append(
                (
                    "Normal",
                    EventReason.CHECKPOINT_SUCCEEDED,
                    f"checkpoint {entry['id']} of {entry['sourcePod']} done",
                )
            )
        else:
            events.append(
                ("Warning", EventReason.CHECKPOINT_FAILED, f"checkpoint {entry['id']} failed: {job.reason}")
            )
    return events


def _fail_orphans(
    history: list[CheckpointRecord], jobs: Mapping[str, JobView], pods: set[str], now: datetime
) -> list[tuple[str, str, str]]:
    """A running entry without its Job can only be restarted from its source pod: with both gone it has
    failed, rather than running forever."""
    events: list[tuple[str, str, str]] = []
    for entry in history:
        if (
            entry["result"] != CheckpointResult.RUNNING
            or entry["job"] in jobs
            or entry.get("sourcePod") in pods
        ):
            continue
        started = parse_time(entry.get("startedAt")) or now
        entry["result"] = CheckpointResult.FAILED
        entry["reason"] = Reason.JOB_AND_SOURCE_GONE
        entry["finishedAt"] = format_time(now)
        entry["durationSeconds"] = max(0, int((now - started).total_seconds()))
        message = f"checkpoint {entry['id']} failed: its Job and its source pod {entry['sourcePod']} are gone"
        events.append(("Warning", EventReason.CHECKPOINT_FAILED, message))
    return events


def _start_due(plan: CheckpointPlan, checkpoint: CheckpointSpec, given: CheckpointInputs) -> None:
    """Start a checkpoint when a slot fell due or a new request came, unless one is running already."""
    state = plan.schedule_state
    running = any(e["result"] == CheckpointResult.RUNNING for e in plan.history)
    base = parse_time(state.get("lastScheduleTime")) or given.created_at
    slot, upcoming = (None, None) if checkpoint.suspend else latest_slot(checkpoint, base, given.now)
    plan.next_look = upcoming
    requested = bool(given.request) and given.request != state.get("lastRequest")
    if slot is None and not requested:
        return
    if not running:
        # Never two at once: a running checkpoint answers the request, and a slot that fell due while it
        # ran is counted as served.
        source = choose_source(checkpoint, given.pods, given.verdicts, given.primary)
        if source is None:
            plan.events.append(
                ("Warning", EventReason.CHECKPOINT_SKIPPED, "no healthy pod to take a checkpoint from")
            )
            plan.next_look = given.now + timedelta(seconds=SKIPPED_RETRY_SECONDS)
            return
        plan.start = _new_entry(plan, given, source)
    if slot is not None:
        state["lastScheduleTime"] = format_time(slot)
    if requested:
        state["lastRequest"] = given.request


def _new_entry(plan: CheckpointPlan, given: CheckpointInputs, source: PodView) -> CheckpointRecord:
    checkpoint_id = _unique_id(given.now, {e["id"] for e in plan.history})
    entry: CheckpointRecord = {
        "id": checkpoint_id,
        "job": names.checkpoint_job_name(given.name, checkpoint_id),
        "result": CheckpointResult.RUNNING,
        "sourcePod": source.name,
        "term": given.term,
        "startedAt": format_time(given.now),
    }
    plan.history.append(entry)
    plan.events.append(
        (
            "Normal",
            EventReason.CHECKPOINT_STARTED,
            f"checkpoint {checkpoint_id} of {source.name} (term {given.term})",
        )
    )
    return entry


def _condition(history: Sequence[CheckpointRecord], last_successful: str) -> cond.Condition | None:
    done = [e for e in history if e["result"] in (CheckpointResult.SUCCEEDED, CheckpointResult.FAILED)]
    if not done:
        return None
    last = done[-1]
    ok = last["result"] == CheckpointResult.SUCCEEDED
    message = f"checkpoint {last['id']} " + ("succeeded" if ok else f"failed ({last.get('reason')})")
    if not ok and last_successful:
        message += f"; the last good one is {last_successful}"
    reason = Reason.SUCCEEDED if ok else (last.get("reason") or Reason.FAILED)
    return cond.Condition(ConditionType.CHECKPOINT_SUCCEEDED, ok, reason, message)


def _retain(plan: CheckpointPlan, checkpoint: CheckpointSpec | None, now: datetime) -> None:
    keep_last = checkpoint.keep_last if checkpoint else CHECKPOINT_HISTORY_LIMIT
    max_age = checkpoint.max_age_seconds if checkpoint else 0
    succeeded = [e for e in plan.history if e["result"] == CheckpointResult.SUCCEEDED]
    newest_good = succeeded[-1] if succeeded else None
    drop: list[CheckpointRecord] = succeeded[:-keep_last] if len(succeeded) > keep_last else []
    if max_age:
        for entry in plan.history:
            finished = parse_time(entry.get("finishedAt"))
            if (
                finished is not None
                and (now - finished).total_seconds() > max_age
                and entry is not newest_good
            ):
                drop.append(entry)
    kept = [e for e in plan.history if not any(e is d for d in drop)]
    while len(kept) > CHECKPOINT_HISTORY_LIMIT:
        victim = next(
            (e for e in kept if e["result"] != CheckpointResult.RUNNING and e is not newest_good), None
        )
        if victim is None:
            break
        kept.remove(victim)
        drop.append(victim)
    plan.delete_jobs += [e["job"] for e in drop if e.get("job")]
    plan.history = kept


def restore_source(spec: FtsSpec, recovery: Recovery, last_successful: str) -> str:
    """Which checkpoint a new pod loads, or "": an automatic recovery in progress first, then spec.restore."""
    if spec.checkpoint is None or spec.checkpoint.restore_template is None:
        return ""
    if recovery.get("checkpoint") and not recovery.get("completedAt"):
        return recovery["checkpoint"]
    if spec.restore_from == "latest":
        return last_successful
    return spec.restore_from
