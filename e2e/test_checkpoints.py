"""Checkpoint Jobs, retention, restore and automatic recovery on the real control plane (kwok completes or
fails the Jobs' pods)."""

from __future__ import annotations

import time
from typing import Any

from e2e.faults import fail_container
from e2e.fts import Fts, manifest
from e2e.kube import Kube, condition, ftso_cli, pod_ready, wait_for
from e2e.operator_process import OperatorProcess

FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"


def _checkpointed(**checkpoint: Any) -> dict[str, Any]:
    body = manifest(failover={"delaySeconds": 1, "minIntervalSeconds": 0, "maxPerHour": 100})
    body["spec"]["checkpoint"] = {
        "template": {"name": "checkpoint", "image": "counter:dev", "args": ["checkpoint"]},
        "storage": {"emptyDir": {}},
        "restoreTemplate": {"name": "restore", "image": "counter:dev", "args": ["restore"]},
        "retries": 1,
        **checkpoint,
    }
    return body


def _jobs(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    return kube.items(f"/apis/batch/v1/namespaces/{namespace}/jobs", "ftso.dev/service=svc")


def _history(fts: Fts) -> list[dict[str, Any]]:
    return list(fts.status().get("checkpoints") or [])


def test_scheduled_checkpoints_run_are_recorded_and_pruned(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts = Fts(kube, namespace)
    fts.create(_checkpointed(intervalSeconds=2, retention={"keepLast": 2}))
    fts.wait_ready()
    wait_for(
        lambda: (
            sum(1 for e in _history(fts) if e["result"] == "Succeeded") >= 2
            and len(fts.status().get("checkpointSchedule", {}).get("lastScheduleTime", "")) > 0
            and fts.status().get("lastSuccessfulCheckpoint")
        ),
        timeout=60,
        what="two successful checkpoints",
    )
    first_ids = [e["id"] for e in _history(fts)]
    wait_for(
        lambda: _history(fts) and _history(fts)[0]["id"] not in first_ids[:1],
        timeout=60,
        what="the oldest pruned",
    )
    history = _history(fts)
    assert sum(1 for e in history if e["result"] == "Succeeded") <= 2
    entry = next(e for e in history if e["result"] == "Succeeded")
    assert entry["sourcePod"] != fts.status()["primary"], "a replica is the source by default"
    assert entry["term"] == fts.status()["term"] and entry["durationSeconds"] >= 0
    known = {e["job"] for e in _history(fts)}
    wait_for(
        lambda: (
            {j["metadata"]["name"] for j in _jobs(kube, namespace)}
            <= known | {e["job"] for e in _history(fts)}
        ),
        what="pruned checkpoints' Jobs deleted",
    )
    job = _jobs(kube, namespace)[0]
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FTSO_TARGET_IP"] and env["FTSO_CHECKPOINT_ID"] and env["FTSO_TARGET_PORT"] == "8080"
    assert condition(fts.get(), "CheckpointSucceeded") == "True"


def test_failing_checkpoint_retries_then_reports_and_keeps_the_last_good(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts = Fts(kube, namespace)
    fts.create(_checkpointed(intervalSeconds=3600))
    fts.wait_ready()
    good = ftso_cli(kube, "checkpoint", "svc", "-n", namespace, "--wait")
    assert good.returncode == 0, good.stderr
    good_id = fts.status()["lastSuccessfulCheckpoint"]
    fts.patch_spec({"checkpoint": {"labels": {FAIL_LABEL: "true"}}})
    bad = ftso_cli(kube, "checkpoint", "svc", "-n", namespace, "--wait")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    last = _history(fts)[-1]
    assert last["result"] == "Failed" and last["reason"] == "BackoffLimitExceeded"
    job = next(j for j in _jobs(kube, namespace) if j["metadata"]["name"] == last["job"])
    assert job["status"].get("failed", 0) == 2, "retried as configured (1 retry)"
    cond = next(c for c in fts.status()["conditions"] if c["type"] == "CheckpointSucceeded")
    assert (
        cond["status"] == "False" and cond["reason"] == "BackoffLimitExceeded" and good_id in cond["message"]
    )
    assert fts.status()["lastSuccessfulCheckpoint"] == good_id
    fts.wait_event("CheckpointFailed")


def test_two_manual_triggers_at_once_give_one_job(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts = Fts(kube, namespace)
    fts.create(_checkpointed(intervalSeconds=3600, labels={FAIL_LABEL: "true"}, retries=2))
    fts.wait_ready()
    kube.patch(fts.path, {"metadata": {"annotations": {"ftso.dev/checkpoint": "first"}}})
    kube.patch(fts.path, {"metadata": {"annotations": {"ftso.dev/checkpoint": "second"}}})
    wait_for(
        lambda: fts.status().get("checkpointSchedule", {}).get("lastRequest") == "second",
        what="both answered",
    )
    time.sleep(2)
    assert len(_jobs(kube, namespace)) == 1
    assert len(_history(fts)) == 1


def test_restore_puts_the_checkpoint_on_new_pods(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts = Fts(kube, namespace)
    fts.create(_checkpointed(intervalSeconds=3600))
    status = fts.wait_ready()
    assert ftso_cli(kube, "checkpoint", "svc", "-n", namespace, "--wait").returncode == 0
    checkpoint_id = fts.status()["lastSuccessfulCheckpoint"]
    assert ftso_cli(kube, "restore", "svc", "-n", namespace).returncode == 0
    victim = next(
        p["metadata"]["name"] for p in fts.live_pods() if p["metadata"]["name"] != status["primary"]
    )
    uid = fts.pod(victim)["metadata"]["uid"]  # type: ignore[index]
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/{victim}", grace=0)
    new = wait_for(
        lambda: (p := fts.pod(victim)) and p["metadata"]["uid"] != uid and p, what="the replacement"
    )
    (init,) = new["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert init["name"] == "restore" and env["FTSO_CHECKPOINT_ID"] == checkpoint_id
    assert new["metadata"]["annotations"]["ftso.dev/restored-from"] == checkpoint_id
    wait_for(
        lambda: any(
            p["name"] == victim and p.get("restoredFrom") == checkpoint_id for p in fts.status()["pods"]
        ),
        what="status shows what the pod was restored from",
    )
    untouched = [p for p in fts.live_pods() if p["metadata"]["name"] != victim]
    assert all("initContainers" not in p["spec"] for p in untouched), "running pods are not rolled"


def test_all_pods_lost_recovers_from_the_latest_checkpoint(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts = Fts(kube, namespace)
    fts.create(_checkpointed(intervalSeconds=3600))
    fts.wait_ready()
    checkpoint_asked = time.time()
    assert ftso_cli(kube, "checkpoint", "svc", "-n", namespace, "--wait").returncode == 0
    checkpoint_done = time.time()  # the checkpoint finished between these two moments
    checkpoint_id = fts.status()["lastSuccessfulCheckpoint"]
    # Every pod's container fails while the operator is away, so it finds them all failed at once. (Every
    # node lost at once would not do: that says more about the operator's view than about the nodes, and
    # node loss is then held, recovery included.)
    term_before = fts.status()["term"]  # recovery may be done before the test reads the status again
    operator.stop()
    for pod in fts.live_pods():
        fail_container(kube, namespace, pod["metadata"]["name"])
    wait_for(
        lambda: all(p["status"].get("phase") == "Failed" for p in fts.live_pods()),
        what="every pod Failed",
    )
    restarted = time.time()
    operator.start()
    started = wait_for(
        lambda: (r := fts.status().get("recovery")) and r.get("checkpoint") == checkpoint_id and r,
        timeout=60,
        what="recovery started",
    )
    seen = time.time()  # the recovery started between the restart and this moment
    # The window is the time from the checkpoint's finish to the recovery's start: at least what passed
    # between the two intervals the test saw them in, at most what spans both (timestamps have 1 s steps).
    window = started["dataLossWindowSeconds"]
    assert restarted - checkpoint_done - 1 <= window <= seen - checkpoint_asked + 1, (
        window,
        restarted - checkpoint_done,
        seen - checkpoint_asked,
    )
    done = wait_for(
        lambda: (r := fts.status().get("recovery")) and r.get("completedAt") and fts.status(),
        timeout=120,
        what="recovery completed",
    )
    assert done["term"] == term_before + 1
    assert done["primary"]
    wait_for(
        lambda: len(fts.live_pods()) == 3 and all(pod_ready(p) for p in fts.live_pods()),
        timeout=90,
        what="3 pods back",
    )
    restored = [
        p
        for p in fts.live_pods()
        if p["metadata"]["annotations"].get("ftso.dev/restored-from") == checkpoint_id
    ]
    assert restored, "the recreated pods loaded the checkpoint"
    fts.wait_event("RecoveryStarted")
    fts.wait_event("RecoveredFromCheckpoint")


def test_operator_restarted_mid_checkpoint(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    fts = Fts(kube, namespace)
    fts.create(_checkpointed(intervalSeconds=3600, labels={FAIL_LABEL: "true"}, retries=1))
    fts.wait_ready()
    kube.patch(fts.path, {"metadata": {"annotations": {"ftso.dev/checkpoint": "now"}}})
    wait_for(
        lambda: _history(fts) and _history(fts)[-1]["result"] == "Running",
        interval=0.05,
        what="a running checkpoint",
    )
    operator.kill()
    operator.start()
    wait_for(lambda: _history(fts)[-1]["result"] == "Failed", timeout=90, what="the checkpoint to finish")
    time.sleep(1)
    assert len(_jobs(kube, namespace)) == 1
    assert len(_history(fts)) == 1
