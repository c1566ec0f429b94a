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
from ftso.health import Health, Verdict
from ftso.model import PodView, format_time, parse_time
from ftso.schedule import CronError, next_after, parse_cron

CHECKPOINT_ANNOTATION = names.PREFIX + "checkpoint"
LABEL_CHECKPOINT = names.PREFIX + "checkpoint"
CHECKPOINT_MOUNT = "/checkpoints"
CATCH_UP_LIMIT = 100_000


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
    result, reason, finished = "Running", "", None
    for c in status.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") in ("Complete", "SuccessCriteriaMet"):
            result, finished = "Succeeded", parse_time(c.get("lastTransitionTime"))
        elif c.get("type") in ("Failed", "FailureTarget"):
            result, reason = "Failed", str(c.get("reason") or "Failed")
            finished = parse_time(c.get("lastTransitionTime"))
    return JobView(
        name=str(metadata.get("name", "")),
        checkpoint_id=str((metadata.get("labels") or {}).get(LABEL_CHECKPOINT, "")),
        result=result,
        reason=reason,
        finished_at=finished or parse_time(status.get("completionTime")),
    )


@dataclass
class CheckpointPlan:
    history: list[dict[str, Any]]
    schedule_state: dict[str, Any]
    last_successful: str = ""
    start: dict[str, Any] | None = None  # the history entry of a checkpoint to start now
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
    except CronError:
        return None, None
    first = next_after(cron, base)
    if first > now:
        return None, first
    slot = first
    for _ in range(CATCH_UP_LIMIT):  # missed slots collapse into one run
        following = next_after(cron, slot)
        if following > now:
            return slot, following
        slot = following
    return slot, next_after(cron, now)


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


def decide_checkpoints(
    spec: FtsSpec,
    *,
    name: str,
    created_at: datetime,
    request: str,
    previous: Mapping[str, Any],
    jobs: Sequence[JobView],
    pods: Sequence[PodView],
    verdicts: Mapping[str, Verdict],
    primary: str,
    term: int,
    now: datetime,
    acting: bool,
) -> CheckpointPlan:
    history = [dict(h) for h in previous.get("checkpoints") or []]
    schedule_state = dict(previous.get("checkpointSchedule") or {})
    plan = CheckpointPlan(history=history, schedule_state=schedule_state)
    checkpoint = spec.checkpoint
    by_name = {j.name: j for j in jobs}

    # What the Jobs say about the checkpoints still running.
    for entry in history:
        if entry.get("result") != "Running":
            continue
        job = by_name.get(str(entry.get("job")))
        if job is None or job.result == "Running":
            continue
        finished = job.finished_at or now
        started = parse_time(entry.get("startedAt")) or finished
        entry.update(
            result=job.result,
            reason=job.reason,
            finishedAt=format_time(finished),
            durationSeconds=max(0, int((finished - started).total_seconds())),
        )
        if job.result == "Succeeded":
            plan.events.append(
                (
                    "Normal",
                    "CheckpointSucceeded",
                    f"checkpoint {entry['id']} of {entry.get('sourcePod')} done",
                )
            )
        else:
            plan.events.append(
                ("Warning", "CheckpointFailed", f"checkpoint {entry['id']} failed: {job.reason}")
            )

    if checkpoint is not None and acting:
        running = any(e.get("result") == "Running" for e in history)
        base = parse_time(schedule_state.get("lastScheduleTime")) or created_at
        slot, upcoming = (None, None) if checkpoint.suspend else latest_slot(checkpoint, base, now)
        plan.next_look = upcoming
        requested = bool(request) and request != schedule_state.get("lastRequest")
        if running and (slot is not None or requested):
            # Never two at once: the running checkpoint answers the request, and a slot that fell due
            # while it ran is counted as served.
            if slot is not None:
                schedule_state["lastScheduleTime"] = format_time(slot)
            if requested:
                schedule_state["lastRequest"] = request
        elif slot is not None or requested:
            source = choose_source(checkpoint, pods, verdicts, primary)
            if source is None:
                plan.events.append(
                    ("Warning", "CheckpointSkipped", "no healthy pod to take a checkpoint from")
                )
                plan.next_look = now + timedelta(seconds=10)
            else:
                checkpoint_id = _unique_id(now, {str(e.get("id")) for e in history})
                entry = {
                    "id": checkpoint_id,
                    "job": f"{name}-ckpt-{checkpoint_id}",
                    "result": "Running",
                    "sourcePod": source.name,
                    "term": term,
                    "startedAt": format_time(now),
                }
                history.append(entry)
                plan.start = entry
                plan.events.append(
                    (
                        "Normal",
                        "CheckpointStarted",
                        f"checkpoint {checkpoint_id} of {source.name} (term {term})",
                    )
                )
                if slot is not None:
                    schedule_state["lastScheduleTime"] = format_time(slot)
                if requested:
                    schedule_state["lastRequest"] = request
        # A started checkpoint whose Job is missing (we stopped between writing status and creating it).
        for entry in history:
            if (
                entry.get("result") == "Running"
                and entry.get("job") not in by_name
                and entry is not plan.start
            ):
                plan.start = plan.start or entry

    _retain(plan, checkpoint, now)
    known = {str(e.get("job")) for e in plan.history}
    plan.delete_jobs += [j.name for j in jobs if j.name not in known and j.result != "Running"]
    succeeded = [e for e in plan.history if e.get("result") == "Succeeded"]
    plan.last_successful = (
        str(succeeded[-1]["id"]) if succeeded else str(previous.get("lastSuccessfulCheckpoint") or "")
    )
    done = [e for e in plan.history if e.get("result") in ("Succeeded", "Failed")]
    if done:
        last = done[-1]
        ok = last.get("result") == "Succeeded"
        message = f"checkpoint {last['id']} " + ("succeeded" if ok else f"failed ({last.get('reason')})")
        if not ok and plan.last_successful:
            message += f"; the last good one is {plan.last_successful}"
        plan.condition = cond.Condition(
            cond.CHECKPOINT_SUCCEEDED, ok, "Succeeded" if ok else str(last.get("reason") or "Failed"), message
        )
    return plan


def _retain(plan: CheckpointPlan, checkpoint: CheckpointSpec | None, now: datetime) -> None:
    keep_last = checkpoint.keep_last if checkpoint else CHECKPOINT_HISTORY_LIMIT
    max_age = checkpoint.max_age_seconds if checkpoint else 0
    succeeded = [e for e in plan.history if e.get("result") == "Succeeded"]
    newest_good = succeeded[-1] if succeeded else None
    drop: list[dict[str, Any]] = succeeded[:-keep_last] if len(succeeded) > keep_last else []
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
        victim = next((e for e in kept if e.get("result") != "Running" and e is not newest_good), None)
        if victim is None:
            break
        kept.remove(victim)
        drop.append(victim)
    plan.delete_jobs += [str(e["job"]) for e in drop if e.get("job")]
    plan.history = kept


def restore_source(spec: FtsSpec, status: Mapping[str, Any], last_successful: str) -> str:
    """Which checkpoint a new pod loads, or "": an automatic recovery in progress first, then spec.restore."""
    if spec.checkpoint is None or spec.checkpoint.restore_template is None:
        return ""
    recovery = status.get("recovery") or {}
    if recovery.get("checkpoint") and not recovery.get("completedAt"):
        return str(recovery["checkpoint"])
    if spec.restore_from == "latest":
        return last_successful
    return spec.restore_from
