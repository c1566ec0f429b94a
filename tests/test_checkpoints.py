"""Checkpoints and recovery, decided without a cluster: schedules, the Job, history, retention, restore."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ftso import names
from ftso.checkpoints import JobView
from ftso.model import NodeView, format_time
from ftso.reconcile import Observed, decide
from ftso.schedule import CronError, next_after, parse_cron

from .factories import NOW, observed, pod, raw_spec

CHECKPOINT = {
    "intervalSeconds": 300,
    "template": {"name": "checkpoint", "image": "counter:dev", "args": ["checkpoint"]},
    "storage": {"persistentVolumeClaim": {"claimName": "ckpt"}},
    "retries": 1,
    "timeoutSeconds": 60,
    "retention": {"keepLast": 2},
    "labels": {"team": "a"},
    "restoreTemplate": {"name": "restore", "image": "counter:dev", "args": ["restore"]},
}


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/5 * * * *", "2026-11-26T12:01:30", "2026-11-26T12:05:00"),
        ("0 3 * * *", "2026-11-26T12:00:00", "2026-11-27T03:00:00"),
        ("30 2 1 * *", "2026-11-26T12:00:00", "2026-12-01T02:30:00"),
        ("0 0 * * 0", "2026-11-26T12:00:00", "2026-11-29T00:00:00"),  # Sunday
        ("15,45 8-9 * 1 *", "2026-11-26T12:00:00", "2027-01-01T08:15:00"),
    ],
)
def test_cron(expression: str, after: str, expected: str) -> None:
    moment = datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert next_after(parse_cron(expression), moment) == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("expression", ["* * *", "61 * * * *", "a * * * *", "*/0 * * * *", "5-1 * * * *"])
def test_bad_cron_is_refused(expression: str) -> None:
    with pytest.raises(CronError):
        parse_cron(expression)


def _pods(term: int = 1) -> list[dict[str, Any]]:
    pods = [
        pod(0, role="primary", term=term, node_name="node-0"),
        pod(1, term=term, node_name="node-1"),
        pod(2, term=term, node_name="node-2"),
    ]
    for i, p in enumerate(pods):
        p["status"]["podIP"] = f"10.0.0.{i + 10}"
    return pods


def _observe(
    *,
    status: dict[str, Any] | None = None,
    jobs: tuple[JobView, ...] = (),
    now: datetime = NOW,
    annotations: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
    pods: list[dict[str, Any]] | None = None,
) -> Observed:
    return observed(
        pods if pods is not None else _pods(),
        spec=spec or raw_spec(checkpoint=CHECKPOINT),
        status=status or {"primary": "demo-0", "term": 1},
        now=now,
        annotations=annotations,
        created_at=NOW - timedelta(seconds=301),
        jobs=jobs,
    )


def test_due_interval_starts_a_job_on_a_replica_with_the_env() -> None:
    plan = decide(_observe())
    (job,) = plan.job_creates
    (entry,) = plan.status["checkpoints"]
    assert entry["result"] == "Running" and entry["sourcePod"] == "demo-1" and entry["term"] == 1
    assert job["metadata"]["name"] == entry["job"]
    assert job["spec"]["backoffLimit"] == 1 and job["spec"]["activeDeadlineSeconds"] == 60
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FTSO_TARGET_POD"] == "demo-1" and env["FTSO_TARGET_IP"] == "10.0.0.11"
    assert (
        env["FTSO_TARGET_PORT"] == "8080"
        and env["FTSO_CHECKPOINT_ID"] == entry["id"]
        and env["FTSO_TERM"] == "1"
    )
    assert {"name": "ftso-checkpoints", "mountPath": "/checkpoints"} in container["volumeMounts"]
    assert job["spec"]["template"]["spec"]["volumes"] == [
        {"name": "ftso-checkpoints", "persistentVolumeClaim": {"claimName": "ckpt"}}
    ]
    assert job["spec"]["template"]["metadata"]["labels"]["team"] == "a"
    assert "ftso.dev/service" not in job["spec"]["template"]["metadata"]["labels"], (
        "job pods stay out of the PDB"
    )
    assert plan.status["checkpointSchedule"]["lastScheduleTime"] == format_time(NOW - timedelta(seconds=1))


def test_missed_slots_are_caught_up_once() -> None:
    status = {
        "primary": "demo-0",
        "term": 1,
        "checkpointSchedule": {"lastScheduleTime": format_time(NOW - timedelta(hours=5))},
    }
    plan = decide(_observe(status=status))
    assert len(plan.job_creates) == 1
    again = decide(
        _observe(status=plan.status, jobs=(JobView(plan.job_creates[0]["metadata"]["name"], "x", "Running"),))
    )
    assert again.job_creates == []


def test_a_request_while_one_runs_is_coalesced() -> None:
    first = decide(_observe(annotations={names.ANNOTATION_CHECKPOINT: "r1"}))
    running = (JobView(first.job_creates[0]["metadata"]["name"], "x", "Running"),)
    second = decide(
        _observe(status=first.status, jobs=running, annotations={names.ANNOTATION_CHECKPOINT: "r2"})
    )
    assert second.job_creates == []
    assert second.status["checkpointSchedule"]["lastRequest"] == "r2"
    assert len(second.status["checkpoints"]) == 1


def test_results_history_condition_and_retention() -> None:
    history = [
        {
            "id": f"c{i}",
            "job": f"demo-ckpt-c{i}",
            "result": "Succeeded",
            "startedAt": format_time(NOW - timedelta(minutes=10 - i)),
            "finishedAt": format_time(NOW - timedelta(minutes=9 - i)),
        }
        for i in range(3)
    ] + [
        {
            "id": "c3",
            "job": "demo-ckpt-c3",
            "result": "Running",
            "startedAt": format_time(NOW - timedelta(seconds=30)),
        }
    ]
    status = {
        "primary": "demo-0",
        "term": 1,
        "checkpoints": history,
        "checkpointSchedule": {"lastScheduleTime": format_time(NOW - timedelta(seconds=10))},
    }
    failed = JobView("demo-ckpt-c3", "c3", "Failed", "BackoffLimitExceeded", NOW)
    plan = decide(_observe(status=status, jobs=(failed,)))
    assert [e["id"] for e in plan.status["checkpoints"]] == ["c1", "c2", "c3"]  # keepLast 2 successful
    assert plan.job_deletes == ["demo-ckpt-c0"]
    assert plan.status["checkpoints"][-1]["result"] == "Failed"
    assert plan.status["lastSuccessfulCheckpoint"] == "c2"
    condition = next(c for c in plan.status["conditions"] if c["type"] == "CheckpointSucceeded")
    assert condition["status"] == "False" and condition["reason"] == "BackoffLimitExceeded"
    assert "last good one is c2" in condition["message"]
    assert "CheckpointFailed" in [e.reason for e in plan.events]


def test_restore_puts_the_init_container_and_checkpoint_on_new_pods() -> None:
    spec = raw_spec(checkpoint=CHECKPOINT, restore={"checkpoint": "latest"})
    status = {
        "primary": "demo-0",
        "term": 1,
        "lastSuccessfulCheckpoint": "c9",
        "checkpoints": [{"id": "c9", "job": "j", "result": "Succeeded", "finishedAt": format_time(NOW)}],
        "checkpointSchedule": {"lastScheduleTime": format_time(NOW)},
    }
    plan = decide(_observe(spec=spec, status=status, pods=_pods()[:2]))
    (created,) = plan.creates
    (init,) = created["spec"]["initContainers"]
    assert init["name"] == "restore"
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["FTSO_CHECKPOINT_ID"] == "c9" and env["FTSO_CHECKPOINT_DIR"] == "/checkpoints"
    assert created["metadata"]["annotations"]["ftso.dev/restored-from"] == "c9"
    assert any(v["name"] == "ftso-checkpoints" for v in created["spec"]["volumes"])


def test_restore_without_a_restore_template_is_invalid() -> None:
    checkpoint = {k: v for k, v in CHECKPOINT.items() if k != "restoreTemplate"}
    plan = decide(_observe(spec=raw_spec(checkpoint=checkpoint, restore={"checkpoint": "latest"})))
    assert plan.status["phase"] == "Invalid"


def test_all_pods_lost_recovers_from_the_latest_checkpoint() -> None:
    finished = NOW - timedelta(seconds=90)
    history = [{"id": "c7", "job": "j7", "result": "Succeeded", "finishedAt": format_time(finished)}]
    status = {
        "primary": "demo-0",
        "term": 4,
        "checkpoints": history,
        "lastSuccessfulCheckpoint": "c7",
        "checkpointSchedule": {"lastScheduleTime": format_time(NOW)},
    }
    lost = [pod(i, role="primary" if i == 0 else "replica", node_name="node-gone", term=4) for i in range(3)]
    seen = _observe(status=status, pods=lost)
    gone = NodeView("node-gone", ready=False, deleted_at=NOW - timedelta(seconds=60))  # seen deleted
    plan = decide(dataclasses.replace(seen, nodes={**seen.nodes, "node-gone": gone}))
    assert plan.status["primary"] == "" and plan.status["term"] == 4
    assert plan.status["recovery"] == {
        "checkpoint": "c7",
        "startedAt": format_time(NOW),
        "dataLossWindowSeconds": 90,
    }
    assert "RecoveryStarted" in [e.reason for e in plan.events]
    assert len(plan.deletes) == 3 and all(d.force for d in plan.deletes)
    # The replacements load c7 ...
    plan = decide(_observe(status=plan.status, pods=[]))
    assert all(p["metadata"]["annotations"]["ftso.dev/restored-from"] == "c7" for p in plan.creates)
    # ... and the first to be healthy becomes primary with term + 1, completing the recovery.
    restored = [pod(i, term=4) for i in range(3)]
    for p in restored:
        p["metadata"]["annotations"]["ftso.dev/restored-from"] = "c7"
    plan = decide(_observe(status=plan.status, pods=restored))
    assert plan.status["primary"] == "demo-0" and plan.status["term"] == 5
    assert plan.status["recovery"]["completedAt"] == format_time(NOW)
    assert "RecoveredFromCheckpoint" in [e.reason for e in plan.events]
    assert all(p["restoredFrom"] == "c7" for p in plan.status["pods"])


def test_no_healthy_source_skips_and_retries_soon() -> None:
    failed = [pod(i, phase="Failed", terminated=True) for i in range(3)]
    plan = decide(_observe(pods=failed, status={"primary": "", "term": 0}))
    assert plan.job_creates == []
    assert "CheckpointSkipped" in [e.reason for e in plan.events]


def test_a_named_target_port_reaches_the_job_as_a_number() -> None:
    spec = raw_spec(
        checkpoint=CHECKPOINT, service={"ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
    )
    (job,) = decide(_observe(spec=spec)).job_creates
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FTSO_TARGET_PORT"] == "8080"


def test_the_job_is_placed_like_the_services_pods() -> None:
    spec = raw_spec(checkpoint=CHECKPOINT)
    placement = {
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "securityContext": {"fsGroup": 10001},
    }
    spec["template"]["spec"].update(placement, hostNetwork=False, terminationGracePeriodSeconds=5)
    (job,) = decide(_observe(spec=spec)).job_creates
    pod_spec = job["spec"]["template"]["spec"]
    assert {k: pod_spec[k] for k in placement} == placement
    assert "hostNetwork" not in pod_spec and "terminationGracePeriodSeconds" not in pod_spec


def _checkpoint_c7_status(*, primary: str) -> dict[str, Any]:
    """A service at term 3 whose last good checkpoint, c7, has just finished."""
    return {
        "primary": primary,
        "term": 3,
        "checkpoints": [{"id": "c7", "job": "j7", "result": "Succeeded", "finishedAt": format_time(NOW)}],
        "lastSuccessfulCheckpoint": "c7",
        "checkpointSchedule": {"lastScheduleTime": format_time(NOW)},
    }


def test_a_pod_made_after_the_data_was_lost_does_not_stop_the_recovery_nor_win_it() -> None:
    """The primary and then each replica deleted in turn: the first one's replacement already exists, never
    Ready, when the last holder goes. It holds nothing, so the recovery starts, replaces it, and elects only
    a pod that loaded the checkpoint."""
    spec = raw_spec(checkpoint=CHECKPOINT)
    status = _checkpoint_c7_status(primary="demo-2")
    fresh = pod(0, spec=spec, term=3, phase="Pending", ready=False, serving=False)
    gone = pod(2, spec=spec, role="primary", term=3, deleting=True)
    plan = decide(_observe(spec=spec, status=status, pods=[fresh, gone]))
    assert plan.status["primary"] == "" and plan.status["recovery"]["checkpoint"] == "c7"
    assert [d.name for d in plan.deletes] == ["demo-0"]
    assert "NotRestored" in [e.reason for e in plan.events]
    assert [p["metadata"]["annotations"]["ftso.dev/restored-from"] for p in plan.creates] == ["c7"]
    # Had the fresh pod become Ready before its deletion landed, it is still not elected.
    ready_fresh = pod(0, spec=spec, term=3)
    restored = pod(1, spec=spec, term=3, phase="Pending", ready=False, serving=False)
    restored["metadata"]["annotations"]["ftso.dev/restored-from"] = "c7"
    plan = decide(_observe(spec=spec, status=plan.status, pods=[ready_fresh, restored]))
    assert plan.status["primary"] == ""
    assert [d.name for d in plan.deletes] == ["demo-0"]
    restored = pod(1, spec=spec, term=3)
    restored["metadata"]["annotations"]["ftso.dev/restored-from"] = "c7"
    plan = decide(_observe(spec=spec, status=plan.status, pods=[ready_fresh, restored]))
    assert plan.status["primary"] == "demo-1" and plan.status["term"] == 4
    assert plan.status["recovery"]["completedAt"] == format_time(NOW)


def test_a_pod_that_was_ready_may_still_hold_the_data_so_no_recovery_yet() -> None:
    spec = raw_spec(checkpoint=CHECKPOINT)
    status = _checkpoint_c7_status(primary="demo-2")
    # Ready once, not now (DEGRADED): it may come back with the data.
    unready = pod(1, spec=spec, term=3, ready=False, ready_changed=NOW - timedelta(seconds=5))
    gone = pod(2, spec=spec, role="primary", term=3, deleting=True)
    plan = decide(_observe(spec=spec, status=status, pods=[unready, gone]))
    assert plan.status["primary"] == "" and not plan.status.get("recovery")


def test_a_recovery_whose_restore_template_was_removed_still_elects() -> None:
    """No new pod can load the checkpoint any more: enforcing it would replace pods forever."""
    checkpoint = {k: v for k, v in CHECKPOINT.items() if k != "restoreTemplate"}
    spec = raw_spec(checkpoint=checkpoint)
    status = _checkpoint_c7_status(primary="")
    status["recovery"] = {"checkpoint": "c7", "startedAt": format_time(NOW), "dataLossWindowSeconds": 0}
    pods = [pod(i, spec=spec, term=3, node_name=f"node-{i}") for i in range(3)]
    plan = decide(_observe(spec=spec, status=status, pods=pods))
    assert plan.status["primary"] == "demo-0" and plan.deletes == []
