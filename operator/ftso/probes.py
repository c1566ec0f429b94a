"""What the liveness and readiness probes answer, decided from a snapshot of the process: pure, so that
each answer is unit-tested without a cluster, a server or a clock."""

from __future__ import annotations

from dataclasses import dataclass

# A queued key that waited this long while no run ended, or one run that lasted this long, is a stuck queue.
# A reconcile's slowest honest path (API retries with backoff, hooks with their timeouts) stays well below.
STUCK_AFTER_SECONDS = 300.0


@dataclass(frozen=True)
class QueueSnapshot:
    """The work queue at one instant, in seconds of the monotonic clock."""

    depth: int
    waiting_since: tuple[float, ...]  # when each queued key was added
    running_since: tuple[float, ...]  # when each running key's run started
    last_progress: float  # when a run last ended (or the queue started)
    workers: int
    alive_workers: int
    taken_at: float

    @property
    def oldest_wait_seconds(self) -> float:
        return self.taken_at - min(self.waiting_since) if self.waiting_since else 0.0

    @property
    def longest_running_seconds(self) -> float:
        return self.taken_at - min(self.running_since) if self.running_since else 0.0

    @property
    def unfinished_work_seconds(self) -> float:
        return sum(self.taken_at - started for started in self.running_since)

    @property
    def since_progress_seconds(self) -> float:
        return self.taken_at - self.last_progress


@dataclass(frozen=True)
class ProcessState:
    """What the probes look at. `queue` is None until this replica acts (a standby runs no queue)."""

    elects: bool  # replicas elect a leader through a Lease; False: this process acts alone
    leading: bool  # holds the Lease (always True when acting alone)
    primed: bool  # the view was filled from a full LIST and reconciles run
    dead_tasks: tuple[str, ...]  # long-lived tasks that ended and were not restarted
    queue: QueueSnapshot | None


def queue_problems(queue: QueueSnapshot, stuck_after: float = STUCK_AFTER_SECONDS) -> list[str]:
    problems = []
    if queue.alive_workers < queue.workers:
        problems.append(f"{queue.workers - queue.alive_workers} of {queue.workers} queue workers died")
    if queue.longest_running_seconds > stuck_after:
        problems.append(f"a reconcile has run for {queue.longest_running_seconds:.0f}s")
    if queue.oldest_wait_seconds > stuck_after and queue.since_progress_seconds > stuck_after:
        problems.append(
            f"the work queue is stuck: a key waits for {queue.oldest_wait_seconds:.0f}s and no reconcile "
            f"ended for {queue.since_progress_seconds:.0f}s"
        )
    return problems


def liveness_problems(state: ProcessState, stuck_after: float = STUCK_AFTER_SECONDS) -> list[str]:
    """Why this process should be restarted; empty while it is alive. A leader still priming its view is
    alive (priming retries by itself); a restart only helps with what cannot recover by itself."""
    problems = [f"task {name} ended and was not restarted" for name in state.dead_tasks]
    if state.queue is not None:
        problems += queue_problems(state.queue, stuck_after)
    return problems


@dataclass(frozen=True)
class Readiness:
    ready: bool
    role: str  # leader, standby or starting
    message: str


def readiness(state: ProcessState) -> Readiness:
    """Ready: the leader (or the lone replica) once its view is primed, or a standby waiting for the Lease.
    A standby counts as ready so that rollouts of a two-replica Deployment go on while one replica leads."""
    if state.dead_tasks:
        return Readiness(False, "broken", "dead tasks: " + ", ".join(state.dead_tasks))
    if state.leading and state.primed:
        return Readiness(True, "leader", "this replica reconciles")
    if state.leading:
        return Readiness(False, "starting", "leading, filling the view before the first reconcile")
    if state.elects:
        return Readiness(True, "standby", "waiting for the leader Lease")
    return Readiness(False, "starting", "starting")
