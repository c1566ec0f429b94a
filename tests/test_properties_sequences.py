"""Random sequences of what a production cluster does to a service, through the real operator (observe, decide,
execute) against a simulated cluster (tests/sim.py): pods crash, blink and are deleted; nodes go silent,
NotReady, come back, are deleted or tainted out-of-service, join unseen by the operator's node watch; kubelet
clocks are skewed either way; metrics spike, drop and go missing; the clock jumps; a workload patches its own
term; someone wipes the status. Operators die between any two writes, have writes refused, restart with an
empty view, and a second operator acts on a stale view.

Each test checks one rule of docs/design.md after every write and every step:

  fenced-never-elected             no uid named as a failover's fence (or labelled fenced) is elected primary
  term-never-backwards             a status's new term is never below one an operator wrote on a live pod,
                                   and no pod's term annotation is written lower than an operator wrote it
  usage-never-empties              usage never drains the last serving pod, replaces more than
                                   maxUnavailable at a time, or replaces at all with replaceAfterSeconds 0
  no-recovery-while-data-may-live  no checkpoint recovery starts while a process that held data runs, and a
                                   recovery elects only a pod that loaded its checkpoint
  max-per-hour                     failovers of a primary that could come back stay within maxPerHour
  no-delete-on-unconfirmed-node    no pod is force-deleted (for node loss) on a node the operator has not
                                   seen, or one silent for less than the confirmation age; a graceful
                                   delete, decided on the pod's own state, is its kubelet's to carry out
  one-serving-primary              at most one pod is labelled primary and serving at the current term

The number of examples comes from the Hypothesis profile (tests/conftest.py): "ci" by default, "soak" with
`make unit PYTEST_ARGS=--hypothesis-profile=soak`, which also runs longer sequences."""

from __future__ import annotations

import asyncio
import pickle
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cache
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ftso import names

from . import sim
from .factories import raw_spec

SOAK = settings().max_examples > 10_000
MAX_STEPS = 60 if SOAK else 20

RULES = {
    "fenced-never-elected": ("fenced-never-elected",),
    "term-never-backwards": ("term-never-backwards", "pod-term-never-backwards"),
    "usage-never-empties": (
        "usage-never-drains-the-last",
        "usage-within-max-unavailable",
        "usage-replace-never-when-0",
    ),
    "no-recovery-while-data-may-live": ("no-recovery-while-data-may-live", "recovery-elects-only-restored"),
    "max-per-hour": ("max-per-hour",),
    "no-delete-on-unconfirmed-node": ("no-delete-on-unknown-node", "no-delete-on-unconfirmed-node"),
    "one-serving-primary": ("one-serving-primary",),
}


# The run: a world and its two operators


@dataclass
class Run:
    world: sim.World
    a: sim.Operator  # the leader, with a view that is current or a few events behind
    b: sim.Operator  # a deposed leader or a second install: its view is as old as its last sync
    loop: asyncio.AbstractEventLoop

    def pod(self, ordinal: int) -> str | None:
        name = f"{sim.NAME}-{ordinal}"
        return name if name in self.world.pods else None

    def node(self, index: int) -> sim.Node | None:
        return self.world.nodes.get(f"node-{index}")


# Events: each is what the cluster, a workload or a person does between two reconciles


@dataclass(frozen=True)
class PodCrash:
    ordinal: int

    def apply(self, run: Run) -> None:
        if (name := run.pod(self.ordinal)) is not None:
            uid = run.world.pods[name]["metadata"]["uid"]
            run.world.truth[uid].crashed = True
            if uid in run.world.procs:
                run.world.procs[uid].running = False


@dataclass(frozen=True)
class PodUnready:
    ordinal: int

    def apply(self, run: Run) -> None:
        if (name := run.pod(self.ordinal)) is not None:
            run.world.truth[run.world.pods[name]["metadata"]["uid"]].unready = True


@dataclass(frozen=True)
class PodRecovers:
    """The container restarted, or the readiness probe passes again."""

    ordinal: int

    def apply(self, run: Run) -> None:
        if (name := run.pod(self.ordinal)) is not None:
            uid = run.world.pods[name]["metadata"]["uid"]
            truth = run.world.truth[uid]
            if truth.crashed and uid in run.world.procs:
                run.world.procs[uid].running = True  # the kubelet restarted the container, on its data
            truth.crashed = truth.unready = False


@dataclass(frozen=True)
class PodDeleted:
    """Someone (a person, an eviction) deletes a pod gracefully."""

    ordinal: int

    def apply(self, run: Run) -> None:
        if (name := run.pod(self.ordinal)) is not None:
            run.world.delete_pod(name, force=False)


@dataclass(frozen=True)
class NodeSilent:
    """A partition or a dead kubelet: no heartbeats, no status; its processes run on."""

    index: int

    def apply(self, run: Run) -> None:
        if (node := run.node(self.index)) is not None and not node.silent:
            node.silent, node.silent_since = True, run.world.now


@dataclass(frozen=True)
class NodeNotReady:
    """The kubelet reports NotReady (its runtime is down) but still renews its Lease."""

    index: int

    def apply(self, run: Run) -> None:
        if (node := run.node(self.index)) is not None and node.ready:
            node.ready = False
            run.world._node_changed(node)


@dataclass(frozen=True)
class NodeBack:
    index: int

    def apply(self, run: Run) -> None:
        node = run.node(self.index)
        if node is not None and not node.out_of_service and (node.silent or not node.ready):
            node.silent, node.silent_since, node.ready = False, None, True
            run.world._node_changed(node)


@dataclass(frozen=True)
class NodeGone:
    """The machine is gone and its Node object deleted: proven stopped."""

    index: int

    def apply(self, run: Run) -> None:
        world = run.world
        if (node := run.node(self.index)) is not None:
            del world.nodes[node.name]
            world.log.append(("node-", node.name))
            world.node_proven_gone(node.name)


@dataclass(frozen=True)
class NodeOutOfService:
    """A silent node shut down for real, and an administrator taints it out-of-service."""

    index: int

    def apply(self, run: Run) -> None:
        node = run.node(self.index)
        if node is not None and node.silent:
            node.out_of_service, node.ready = True, False
            run.world._node_changed(node)
            run.world.node_proven_gone(node.name)


@dataclass(frozen=True)
class NodeJoins:
    """A new node, where new pods go first; the operators' node watch has not delivered it yet."""

    def apply(self, run: Run) -> None:
        world = run.world
        name = f"node-{len(world.nodes) + 10}"
        world.hidden_nodes.add(name)
        world.add_node(name)


@dataclass(frozen=True)
class NodeWatchCatchesUp:
    def apply(self, run: Run) -> None:
        world = run.world
        for name in sorted(world.hidden_nodes):
            world.hidden_nodes.discard(name)
            if (node := world.nodes.get(name)) is not None:
                world._node_changed(node)
                world._renew(node)


@dataclass(frozen=True)
class KubeletSkew:
    index: int
    seconds: int

    def apply(self, run: Run) -> None:
        if (node := run.node(self.index)) is not None:
            node.skew = float(self.seconds)


@dataclass(frozen=True)
class Load:
    """Measured CPU of one pod (or all) goes over the 800m threshold, or back under it."""

    ordinal: int | None
    high: bool

    def apply(self, run: Run) -> None:
        for name in run.world.pods:
            if self.ordinal is None or name == f"{sim.NAME}-{self.ordinal}":
                run.world.load[name] = sim.HIGH_CPU if self.high else sim.LOW_CPU


@dataclass(frozen=True)
class MetricsOutage:
    down: bool

    def apply(self, run: Run) -> None:
        run.world.metrics_down = self.down


@dataclass(frozen=True)
class WorkloadBumpsTerm:
    """A workload patches its own pod's term annotation (it may: the pod is its own)."""

    ordinal: int
    by: int

    def apply(self, run: Run) -> None:
        if (name := run.pod(self.ordinal)) is not None:
            term = int((run.world.fts.get("status") or {}).get("term") or 0)
            run.world.patch_pod_annotation(name, names.ANNOTATION_TERM, str(term + self.by))


@dataclass(frozen=True)
class StatusReset:
    """Someone wipes the status (a restore from a backup without status, a hand edit)."""

    def apply(self, run: Run) -> None:
        world = run.world
        world.set_status({})
        world.fenced_uids.clear()
        world.soft_failovers.clear()
        world.recovering = ""


@dataclass(frozen=True)
class SecondOperatorCatchesUp:
    """The second operator's watches deliver what happened, all but the last `behind` events."""

    behind: int

    def apply(self, run: Run) -> None:
        sim.sync(run.world, run.b, max(run.b.cursor, len(run.world.log) - self.behind))


# What the operator does in a step


@dataclass(frozen=True)
class Reconcile:
    by: str  # "a": the leader; "b": the second operator on its older view
    lag: int  # watch events the leader's view is behind
    die_at: int | None  # the operator dies before this write (a crash, a restart), nothing after it lands
    refuse_at: int | None  # this write is refused: 409 if it has a precondition, else 403
    restart: bool  # the operator restarted before this reconcile: a fresh LIST, no memory


Step = tuple[Any, int, Reconcile | None]  # an event (or None), the seconds that pass, a reconcile (or None)


ORDINALS = st.integers(0, 2)
NODES = st.integers(0, 2)
SKEWS = st.sampled_from([-600, -120, -60, 0, 60, 600])

pod_events = st.one_of(
    st.builds(PodCrash, ORDINALS),
    st.builds(PodUnready, ORDINALS),
    st.builds(PodRecovers, ORDINALS),
    st.builds(PodDeleted, ORDINALS),
)
node_events = st.one_of(
    st.builds(NodeSilent, NODES),
    st.builds(NodeNotReady, NODES),
    st.builds(NodeBack, NODES),
    st.builds(NodeGone, NODES),
    st.builds(NodeOutOfService, NODES),
    st.just(NodeJoins()),
    st.just(NodeWatchCatchesUp()),
)
clock_events = st.builds(KubeletSkew, NODES, SKEWS)
metrics_events = st.one_of(
    st.builds(Load, st.none() | ORDINALS, st.booleans()),
    st.builds(MetricsOutage, st.booleans()),
)
meddling = st.one_of(
    st.builds(WorkloadBumpsTerm, ORDINALS, st.integers(1, 3)),
    st.just(StatusReset()),
    st.builds(SecondOperatorCatchesUp, st.sampled_from([0, 1, 2, 3])),
)
any_event = pod_events | node_events | clock_events | metrics_events | meddling

# Mostly a few seconds, as reconciles follow events; sometimes minutes or an hour (a stalled operator).
seconds = st.sampled_from([1, 1, 2, 3, 5, 5, 10, 15, 25, 40, 90, 400, 3700])

writes = st.none() | st.integers(0, 6)
reconciles = st.none() | st.builds(
    Reconcile,
    by=st.sampled_from(["a", "a", "a", "b"]),
    lag=st.sampled_from([0, 0, 0, 1, 3]),
    die_at=st.sampled_from([None, None]) | writes,
    refuse_at=st.sampled_from([None, None]) | writes,
    restart=st.booleans(),
)


def sequences(*mixes: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Step]]:
    """Steps whose events come mostly from the given mixes, and now and then from any other."""
    event = st.one_of(*mixes, *mixes, any_event, st.none())
    return st.lists(st.tuples(event, seconds, reconciles), min_size=1, max_size=MAX_STEPS)


@dataclass(frozen=True)
class Setting:
    replicas: int = 3
    nodes: int = 3
    delay_seconds: int = 5
    max_per_hour: int = 12
    min_interval_seconds: int = 10
    metrics: bool = False
    replace_after_seconds: int = 60
    checkpoint: bool = False

    def spec(self) -> dict[str, Any]:
        spec = raw_spec(
            replicas=self.replicas,
            failover={
                "delaySeconds": self.delay_seconds,
                "maxPerHour": self.max_per_hour,
                "minIntervalSeconds": self.min_interval_seconds,
            },
        )
        if self.metrics:
            spec["health"] = {
                "metrics": {
                    "cpu": {"above": "800m"},
                    "forSeconds": 30,
                    "replaceAfterSeconds": self.replace_after_seconds,
                    "staleAfterSeconds": 60,
                }
            }
        if self.checkpoint:
            spec["checkpoint"] = sim.CHECKPOINT
        return spec


EITHER = st.booleans()


def settings_of(
    *, metrics: st.SearchStrategy[bool] = EITHER, checkpoint: st.SearchStrategy[bool] = EITHER
) -> st.SearchStrategy[Setting]:
    return st.builds(
        Setting,
        replicas=st.sampled_from([3, 3, 2, 1]),
        nodes=st.sampled_from([3, 3, 1]),
        delay_seconds=st.sampled_from([5, 0]),
        max_per_hour=st.sampled_from([1, 2, 12]),
        min_interval_seconds=st.sampled_from([0, 10]),
        metrics=metrics,
        replace_after_seconds=st.sampled_from([60, 0]),
        checkpoint=checkpoint,
    )


@cache
def _steady(setting: Setting) -> bytes:
    """The service as it runs before anything happens: pods Ready, a primary elected at term 1."""
    world = sim.World(setting.spec(), setting.nodes, checkpoint=setting.checkpoint)
    loop = asyncio.new_event_loop()
    try:
        operator = sim.start_operator(world, "a")
        for _ in range(6):
            world.now += timedelta(seconds=2)
            world.kubelet_tick()
            sim.sync(world, operator, len(world.log))
            sim.reconcile(world, operator, loop)
    finally:
        sim.close(loop)
    assert not world.violations.found, world.violations.found
    world.compact_log()
    return pickle.dumps(world)


def play(setting: Setting, sequence: list[Step], rules: tuple[str, ...]) -> None:
    world: sim.World = pickle.loads(_steady(setting))
    loop = asyncio.new_event_loop()
    try:
        run = Run(world, sim.start_operator(world, "a"), sim.start_operator(world, "b"), loop)
        for number, (event, elapsed, step) in enumerate(sequence):
            world.now += timedelta(seconds=elapsed)
            if event is not None:
                event.apply(run)
            world.kubelet_tick()
            fresh = _operate(run, step)
            sim.check_world(world, fresh)
            broken = [v for v in world.violations.found if v.split(":", 1)[0] in rules]
            assert not broken, f"step {number}: {broken[0]}"
    finally:
        sim.close(loop)


def _operate(run: Run, step: Reconcile | None) -> sim.Operator | None:
    """Run the step's reconcile; the operator when it ran to its end on a current view."""
    if step is None:
        return None
    world = run.world
    if step.by == "b":
        if step.restart:
            run.b = sim.restart(world, run.b)
        sim.reconcile(world, run.b, run.loop, die_at=step.die_at, refuse_at=step.refuse_at)
        return None
    if step.restart:
        run.a = sim.restart(world, run.a)
    sim.sync(world, run.a, len(world.log) - step.lag)
    done = sim.reconcile(world, run.a, run.loop, die_at=step.die_at, refuse_at=step.refuse_at)
    return run.a if done and step.lag == 0 else None


def leader(**changes: Any) -> Reconcile:
    return replace(Reconcile("a", 0, None, None, False), **changes)


def second(**changes: Any) -> Reconcile:
    return replace(Reconcile("b", 0, None, None, False), **changes)


def blink(ordinal: int) -> list[Step]:
    """The primary turns unready and is failed over from; its replacement comes up."""
    return [(PodUnready(ordinal), 1, leader()), (None, 1, leader()), *[(None, 2, leader())] * 3]


# The scenarios of the issue that led to these rules run first, as examples, then random sequences.


@example(
    Setting(),
    # demo-0's failover is decided and the operator dies before the fence lands; demo-0 recovers, the new
    # primary crashes: demo-0, fenced by uid, must not be elected.
    [
        (PodUnready(0), 1, leader()),
        (None, 6, leader(die_at=1)),
        (PodRecovers(0), 1, None),
        (PodCrash(1), 1, leader()),
    ],
)
@given(settings_of(), sequences(pod_events, node_events))
def test_a_fenced_pod_is_never_elected(setting: Setting, sequence: list[Step]) -> None:
    play(setting, sequence, RULES["fenced-never-elected"])


@example(
    Setting(),
    # A failover to term 2, then the status is wiped: the next election must not go below term 2.
    [(PodCrash(0), 1, leader()), (None, 2, leader()), (StatusReset(), 1, leader())],
)
@example(
    Setting(),
    # Two operators: the second's view holds the status that says demo-1 is Healthy but not the label patch
    # that followed it; after demo-1 is promoted at term 2, that view still asks for demo-1 replica at term 1.
    [
        (PodUnready(1), 1, leader()),
        (PodRecovers(1), 1, leader()),
        (SecondOperatorCatchesUp(1), 1, None),
        (PodCrash(0), 1, leader()),
        (None, 1, second()),
    ],
)
@given(settings_of(), sequences(meddling, pod_events))
def test_the_term_never_goes_backwards(setting: Setting, sequence: list[Step]) -> None:
    play(setting, sequence, RULES["term-never-backwards"])


@example(
    Setting(metrics=True),
    # Every pod over the threshold: at least one must serve, and at most maxUnavailable may be replaced.
    [(Load(None, True), 1, leader()), *[(None, 15, leader())] * 8],
)
@example(
    Setting(metrics=True, replace_after_seconds=0),
    # replaceAfterSeconds 0 is "never replace": the primary is failed over from, never deleted.
    [(Load(0, True), 1, leader()), *[(None, 15, leader())] * 4],
)
@example(
    Setting(metrics=True, replicas=1),
    # The only pod is replaced and its workload writes a term above the status's before the operator labels
    # it: waiting for a newer status is right for a while, not forever (the service serves nothing meanwhile).
    [
        (PodCrash(0), 1, leader()),
        (None, 1, leader()),
        (None, 1, None),
        (None, 1, None),
        (WorkloadBumpsTerm(0, 1), 1, leader()),
        (None, 400, leader()),
    ],
)
@example(
    Setting(max_per_hour=1, min_interval_seconds=0, metrics=True, replace_after_seconds=0),
    # demo-0 is deleted and recreated; 90 s on it turns Ready, and the leader's view is the one event behind
    # that says so. On that view demo-0 "never became Ready", but the delete carries the view's resourceVersion
    # of demo-0 and the API server refuses it (409): no pod is deleted on a view older than the pod.
    [
        (PodDeleted(0), 1, leader()),
        (MetricsOutage(False), 1, leader()),
        (NodeJoins(), 90, leader(lag=1)),
    ],
)
@example(
    Setting(max_per_hour=1, min_interval_seconds=0, metrics=True),
    # The primary's node goes silent past the confirmation: it is failed over from and fenced. When the
    # node is back, the fenced pod is deleted for its fence, not for its usage.
    [(NodeSilent(2), 25, None), (PodCrash(1), 1, leader(lag=1)), (NodeBack(2), 1, leader())],
)
@given(settings_of(metrics=st.just(True)), sequences(metrics_events, pod_events))
def test_usage_never_empties_the_service(setting: Setting, sequence: list[Step]) -> None:
    play(setting, sequence, RULES["usage-never-empties"])


@example(
    Setting(replicas=1, checkpoint=True),
    # The only pod's node goes silent: its process may still run with the data, so no recovery yet.
    [(NodeSilent(2), 1, leader()), *[(None, 10, leader())] * 4],
)
@example(
    Setting(replicas=3, nodes=1, max_per_hour=1, min_interval_seconds=0, checkpoint=True),
    # The primary is unready past unreadyTimeoutSeconds while the replicas crash or are deleted (NodeSilent(1)
    # names no node of this one-node cluster): its process still runs with the data, so no recovery.
    [
        (PodUnready(0), 1, None),
        (PodCrash(2), 1, leader()),
        (NodeSilent(1), 25, None),
        (PodDeleted(1), 5, leader()),
    ],
)
@given(settings_of(checkpoint=st.just(True)), sequences(node_events, pod_events))
def test_no_recovery_while_data_may_live(setting: Setting, sequence: list[Step]) -> None:
    play(setting, sequence, RULES["no-recovery-while-data-may-live"])


@example(
    Setting(max_per_hour=1, min_interval_seconds=0),
    # One failover for an unready primary; the next primary's kubelet runs 60 s behind and it blinks: that
    # is a soft failure (it may come back), so the limit holds it.
    [
        (None, 120, leader()),
        (PodUnready(0), 1, leader()),
        (None, 6, leader()),
        (KubeletSkew(1, -60), 1, leader()),
        (PodUnready(1), 1, leader()),
    ],
)
@example(
    Setting(delay_seconds=0, min_interval_seconds=0),
    # The default maxPerHour (12) against thirteen failovers of a blinking primary within four minutes.
    [step for ordinal in [0, 1] * 6 + [0] for step in blink(ordinal)],
)
@given(settings_of(), sequences(pod_events, clock_events, metrics_events))
def test_failovers_stay_within_max_per_hour(setting: Setting, sequence: list[Step]) -> None:
    play(setting, sequence, RULES["max-per-hour"])


@example(
    Setting(),
    # A node joins and a replacement lands on it before the operator's node watch shows the node.
    [(NodeJoins(), 1, None), (PodDeleted(2), 1, leader()), (None, 1, leader()), (None, 1, leader())],
)
@example(
    Setting(),
    # A node goes silent: its pods are force-deleted once its loss is confirmed (24 s), not at
    # nodeLostAfterSeconds (20 s), when a node silenced with it may not have missed a renewal yet.
    [(NodeSilent(1), 1, leader()), *[(None, 2, leader())] * 15],
)
@example(
    Setting(max_per_hour=1, min_interval_seconds=0),
    # A second operator restarts (its view: a LIST, every Lease heard then), sees demo-1's container crashed,
    # and acts 15 s later on that view: demo-1's node is silent to it, though not to the world.
    [
        (NodeGone(2), 1, None),
        (PodCrash(1), 1, second(restart=True)),
        (NodeSilent(0), 15, second()),
    ],
)
@example(
    Setting(max_per_hour=1, min_interval_seconds=0),
    # A node reported NotReady is the API's word, not a guess from silence: its pods go at once, whatever the
    # age of its heartbeat (their names wait for proof the node stopped).
    [(NodeSilent(2), 2, None), (NodeNotReady(2), 1, None), (KubeletSkew(0, -600), 10, leader())],
)
@given(settings_of(), sequences(node_events, pod_events))
def test_no_delete_on_an_unknown_or_unconfirmed_node(setting: Setting, sequence: list[Step]) -> None:
    play(setting, sequence, RULES["no-delete-on-unconfirmed-node"])


@given(settings_of(), sequences(any_event))
def test_one_serving_primary_at_the_current_term(setting: Setting, sequence: list[Step]) -> None:
    play(setting, sequence, RULES["one-serving-primary"])
