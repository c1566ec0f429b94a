"""The liveness and readiness answers, decided from snapshots of the process: table-driven."""

from __future__ import annotations

import pytest

from ftso.probes import ProcessState, QueueSnapshot, liveness_problems, readiness

NOW = 10_000.0
LIMIT = 300.0


def queue(
    waiting: tuple[float, ...] = (), running: tuple[float, ...] = (), progress: float = 0.0, alive: int = 4
) -> QueueSnapshot:
    return QueueSnapshot(
        depth=len(waiting),
        waiting_since=tuple(NOW - age for age in waiting),
        running_since=tuple(NOW - age for age in running),
        last_progress=NOW - progress,  # `progress`: seconds since a run last ended
        workers=4,
        alive_workers=alive,
        taken_at=NOW,
    )


def state(**changes: object) -> ProcessState:
    fields: dict[str, object] = {
        "elects": True,
        "leading": True,
        "primed": True,
        "dead_tasks": (),
        "queue": queue(),
    }
    fields.update(changes)
    return ProcessState(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "alive"),
    [
        (state(), True),
        (state(queue=queue(waiting=(5.0,), running=(1.0,))), True),
        # Keys waited long, but reconciles keep ending: a busy queue, not a stuck one.
        (state(queue=queue(waiting=(LIMIT + 60,), progress=1.0)), True),
        (state(queue=queue(waiting=(LIMIT + 60,), progress=LIMIT + 30)), False),
        (state(queue=queue(running=(LIMIT + 1,))), False),
        (state(queue=queue(alive=3)), False),
        (state(dead_tasks=("ftso-heartbeats",)), False),
        # A leader still priming (retrying the startup LIST) and a standby are alive.
        (state(primed=False, queue=None), True),
        (state(leading=False, primed=False, queue=None), True),
    ],
)
def test_liveness(given: ProcessState, alive: bool) -> None:
    assert (not liveness_problems(given, LIMIT)) is alive


def test_liveness_says_why() -> None:
    problems = liveness_problems(state(queue=queue(waiting=(400.0,), progress=350.0)), LIMIT)
    assert problems == ["the work queue is stuck: a key waits for 400s and no reconcile ended for 350s"]


@pytest.mark.parametrize(
    ("given", "ready", "role"),
    [
        (state(), True, "leader"),
        (state(elects=False), True, "leader"),
        (state(primed=False, queue=None), False, "starting"),
        (state(leading=False, primed=False, queue=None), True, "standby"),
        (state(elects=False, leading=True, primed=False, queue=None), False, "starting"),
        (state(dead_tasks=("ftso-leader",)), False, "broken"),
    ],
)
def test_readiness(given: ProcessState, ready: bool, role: str) -> None:
    answer = readiness(given)
    assert (answer.ready, answer.role) == (ready, role)
