"""Values the schema lets through (or that workloads and old statuses bring) never crash, wedge or freeze a
service: bounded durations, cron as CronJob reads it, names within 63 characters, bounded status."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest

from ftso import names
from ftso.api.spec import hook_path, parse_spec
from ftso.model import format_time
from ftso.reconcile import FAILURE_MESSAGE_LIMIT, decide, hook_url
from ftso.schedule import CronError, next_after, parse_cron

from .factories import NOW, observed, pod, raw_spec
from .test_checkpoints import CHECKPOINT, _observe, _pods

HUGE = 10**11  # seconds: past year 9999 from any clock


def test_huge_durations_and_counts_are_held_to_the_crds_bounds() -> None:
    spec = raw_spec(
        replicas=HUGE,
        health={
            "unreadyTimeoutSeconds": HUGE,
            "startupProbe": {"periodSeconds": HUGE, "failureThreshold": HUGE},
        },
        failover={"delaySeconds": HUGE, "minIntervalSeconds": HUGE, "nodeLostAfterSeconds": HUGE},
        checkpoint={**CHECKPOINT, "intervalSeconds": HUGE, "timeoutSeconds": HUGE},
    )
    parsed = parse_spec(spec)
    assert parsed.replicas == 1000 and parsed.failover.node_lost_after_seconds == 3600
    pods = [pod(0, role="primary", ready=False, ready_changed=NOW - timedelta(days=3000))]
    plan = decide(observed(pods, spec=spec, status={"primary": "demo-0", "term": 1}))
    assert plan.status["phase"]  # decided, did not raise


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("@daily", "2026-11-26T12:00:00", "2026-11-27T00:00:00"),
        ("@hourly", "2026-11-26T12:00:00", "2026-11-26T13:00:00"),
        ("@weekly", "2026-11-26T12:00:00", "2026-11-29T00:00:00"),
        ("@monthly", "2026-11-26T12:00:00", "2026-12-01T00:00:00"),
        ("@yearly", "2026-11-26T12:00:00", "2027-01-01T00:00:00"),
        ("0 6 * JAN MON", "2026-11-26T12:00:00", "2027-01-04T06:00:00"),
        ("0 0 29 2 *", "2026-11-26T12:00:00", "2028-02-29T00:00:00"),
    ],
)
def test_cronjob_syntax(expression: str, after: str, expected: str) -> None:
    moment = NOW.fromisoformat(after + "+00:00")
    assert format_time(next_after(parse_cron(expression), moment)) == expected + "Z"


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
        ("\u0663 * * * *", "ASCII"),
        ("0 0 L * *", "neither a month nor a day name"),
        ("0 0 * * mon#1", "digits, names"),
        ("5-1 * * * *", "backwards"),
        ("0 0 1 1 * 2030", "five fields"),
        ("@reboot", "five fields"),
    ],
)
def test_a_cron_that_cannot_fire_or_is_not_cronjobs_is_invalid_spec(expression: str, words: str) -> None:
    with pytest.raises(CronError, match=words):
        parse_cron(expression)
    plan = decide(_observe(spec=raw_spec(checkpoint={**CHECKPOINT, "schedule": expression})))
    invalid = next(c for c in plan.status["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["status"] == "True" and words in invalid["message"]


def test_a_busy_schedule_missed_for_years_is_caught_up_at_once() -> None:
    checkpoint = {key: value for key, value in CHECKPOINT.items() if key != "intervalSeconds"}
    spec = raw_spec(checkpoint={**checkpoint, "schedule": "* * * * *"})
    status = {
        "primary": "demo-0",
        "term": 1,
        "checkpointSchedule": {"lastScheduleTime": format_time(NOW - timedelta(days=3 * 365))},
    }
    started = time.monotonic()
    plan = decide(_observe(spec=spec, status=status))
    assert time.monotonic() - started < 1.0
    assert len(plan.job_creates) == 1
    assert plan.status["checkpointSchedule"]["lastScheduleTime"] == format_time(NOW)


def test_generated_names_stay_dns_labels_for_the_longest_resource_name() -> None:
    longest = "a" * 52
    job = names.checkpoint_job_name(longest, "20261126-120000-12")
    assert len(job) <= 63 and job.endswith("-ckpt-20261126-120000-12")
    assert job != names.checkpoint_job_name("a" * 51 + "b", "20261126-120000-12"), "still unique"
    assert names.checkpoint_job_name("demo", "c1") == "demo-ckpt-c1", "short names are unchanged"
    assert len(names.pod_name(longest, 999)) <= 63
    assert all(len(n) <= 63 for n in names.service_names(longest))


def test_a_checkpoint_whose_job_and_source_pod_are_gone_fails() -> None:
    entry = {
        "id": "c1",
        "job": "demo-ckpt-c1",
        "result": "Running",
        "sourcePod": "demo-7",
        "term": 1,
        "startedAt": format_time(NOW - timedelta(minutes=2)),
    }
    plan = decide(_observe(status={"primary": "demo-0", "term": 1, "checkpoints": [entry]}))
    record = plan.status["checkpoints"][0]
    assert record["result"] == "Failed" and record["reason"] == "JobAndSourceGone"
    assert record["durationSeconds"] == 120
    assert any(e.reason == "CheckpointFailed" and "demo-7" in e.message for e in plan.events)
    still_there = {**entry, "sourcePod": "demo-1"}
    plan = decide(_observe(status={"primary": "demo-0", "term": 1, "checkpoints": [still_there]}))
    assert plan.status["checkpoints"][0]["result"] == "Running", "its source can still run it"
    assert [j["metadata"]["name"] for j in plan.job_creates] == ["demo-ckpt-c1"]


@pytest.mark.parametrize("path", ["@evil.example:80/x", "//evil.example/x", "http://evil/x", "/a b", ""])
def test_hook_paths_are_paths_only(path: str) -> None:
    assert hook_path(path, "/promote") == "/promote"
    assert hook_url("10.0.0.1", 8080, hook_path(path, "/promote")) == "http://10.0.0.1:8080/promote"


def test_hook_urls_bracket_ipv6_and_keep_paths() -> None:
    assert hook_url("fd00::1", 9000, "/demote?x=1") == "http://[fd00::1]:9000/demote?x=1"
    assert hook_path("/ok/path", "/promote") == "/ok/path"


def _failed_pods(count: int) -> list[dict[str, Any]]:
    pods = []
    for ordinal in range(count):
        body = pod(ordinal, node_name=f"node-{ordinal % 3}", terminated=True)
        body["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = "E" * 5000
        pods.append(body)
    return pods


def large_failed_status() -> dict[str, Any]:
    """The status decide writes for 1,000 replicas of which all but a few failed, with long reasons."""
    pods = _failed_pods(1000)
    plan = decide(observed(pods, spec=raw_spec(replicas=1000), status={"primary": "demo-0", "term": 3}))
    return dict(plan.status)


def test_status_stays_bounded_at_a_thousand_failed_replicas() -> None:
    status = large_failed_status()
    assert len(status["pods"]) == 1000
    assert all(len(c["message"]) <= FAILURE_MESSAGE_LIMIT for c in status["conditions"])
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and "more characters" in degraded["message"]
    assert all(len(p["reason"]) <= 256 for p in status["pods"])
    assert len(json.dumps(status)) < 1_000_000, "well within etcd's 1.5 MB for the whole object"


def test_a_new_checkpoint_from_a_live_pod_is_not_taken_for_an_orphan() -> None:
    """The orphan rule reads only entries already running: a new checkpoint starts from a live pod."""
    plan = decide(_observe(annotations={names.ANNOTATION_CHECKPOINT: "now"}, pods=_pods()))
    assert len(plan.job_creates) == 1
    assert plan.status["checkpoints"][0]["result"] == "Running"
