"""Failover benchmark: how long from a fault on the primary to a new primary in status, and to
`<name>-primary` routing to it; and the same shape of fault on Kubernetes' own objects (a StatefulSet
behind a Service, same probes) as the baseline: until the Service stops routing to the dead pod and
until a ready replacement is routed.

Trials: (a) primary force-deleted, (b) primary's container failed, (c) primary's node lost (its heartbeat
Lease stops), (d) planned switchover, (e) back-to-back: the new primary force-deleted the moment it is
routed, without waiting for the service to be Ready again. The service keeps the default anti-flapping
limits (failover.minIntervalSeconds, maxPerHour), so a limit that bit would show. Targets: (a), (b), (d),
(e) p99 <= 1 s to the routed new primary; (c) within the confirmed loss, max(failover.nodeLostAfterSeconds,
24 s), + 1 s, against the baseline's 50 s or more (24 s: two heartbeat intervals plus slack, so that nodes
silenced together all show before one is acted on).

`--under-load N`: (a) while N other FaultTolerantServices in a namespace of their own are being created
(trials start as their creation starts; the operator's backlog of pods, Services and statuses is the
load), then while that namespace is being deleted. Every trial is counted; the output says how many fell
while the load was still under way. Target: p99 <= 1 s to the routed new primary over 20 trials each.

`--real`: the same on the real node (e2e/cluster/node.sh) with the counter's image (examples/counter),
real processes and probes: (a) pod deleted and (b) the container's process killed (kill -9 from the host;
the kubelet's detection included, times count from the kill), against a StatefulSet running the same
image on the same node.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from e2e.faults import (
    fail_container,
    force_delete_pod,
    heal_all_nodes,
    lease_age,
    resume_heartbeat,
    stop_heartbeat,
)
from e2e.fts import FAKE_NODES
from e2e.kube import Kube, condition, pod_ready, wait_for
from e2e.real_node import kill_container_process, require_real_node
from e2e.recorder import Seen, WatchRecorder

from bench.common import connect, new_namespace, percentiles, start_operator

NAME = "bench"
FAKE_CONTAINER: dict[str, Any] = {"name": "app", "image": "app:1"}
# The counter as a real process on the real node (no peers needed for timing: it serves alone or not).
REAL_CONTAINER: dict[str, Any] = {
    "name": "app",
    "image": "counter:dev",
    "args": ["serve", "--host", "0.0.0.0", "--port", "8080"],
}


def _container(real: bool) -> dict[str, Any]:
    return {
        **(REAL_CONTAINER if real else FAKE_CONTAINER),
        "ports": [{"name": "http", "containerPort": 8080}],
    }


def _routed_now(eps_events: list[Seen]) -> frozenset[str]:
    """The Service's ready addresses after the last EndpointSlice event (none before the first)."""
    timeline = _ready_ips(eps_events, 0)
    return timeline[-1][1] if timeline else frozenset()


def _ready_ips(eps_events: list[Seen], since: float) -> list[tuple[float, frozenset[str]]]:
    """(time, ready addresses of the Service) after each EndpointSlice event from `since` on."""
    slices: dict[str, set[str]] = {}
    timeline = []
    for seen in eps_events:
        name = seen.object["metadata"]["name"]
        if seen.type == "DELETED":
            slices.pop(name, None)
        else:
            slices[name] = {
                a
                for e in seen.object.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready")
                for a in e.get("addresses") or []
            }
        if seen.at >= since:
            timeline.append((seen.at, frozenset().union(*slices.values()) if slices else frozenset()))
    return timeline


def _pod_ip(pod_events: list[Seen], name: str, after: float) -> str:
    for seen in reversed(pod_events):
        if seen.object["metadata"]["name"] == name and seen.object.get("status", {}).get("podIP"):
            return str(seen.object["status"]["podIP"])
    return ""


class FtsBench:
    def __init__(self, kube: Kube, namespace: str, node_lost_after: int, real: bool = False) -> None:
        self.kube = kube
        self.namespace = namespace
        self.real = real
        self.path = f"/apis/ftso.dev/v1alpha1/namespaces/{namespace}/faulttolerantservices"
        kube.create(
            self.path,
            {
                "apiVersion": "ftso.dev/v1alpha1",
                "kind": "FaultTolerantService",
                "metadata": {"name": NAME},
                "spec": {
                    "replicas": 3,
                    "failover": {
                        "delaySeconds": 1,
                        "nodeLostAfterSeconds": node_lost_after,
                    },
                    "template": {"spec": {"containers": [_container(real)], **({} if real else FAKE_NODES)}},
                },
            },
        )

    def status(self) -> dict[str, Any]:
        return (self.kube.get(f"{self.path}/{NAME}") or {}).get("status") or {}

    def settle(self) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            body = self.kube.get(f"{self.path}/{NAME}") or {}
            status = body.get("status") or {}
            return status if condition(body, "Ready") == "True" and status.get("primary") else None

        return wait_for(ready, timeout=120, what="the benchmark service Ready")

    def routed_primary(self) -> dict[str, Any]:
        """The primary of the last trial, as soon as it is in status: no waiting for the service to heal."""

        def known() -> dict[str, Any] | None:
            status = self.status()
            return status if status.get("primary") else None

        return wait_for(known, timeout=120, interval=0.02, what="a primary in status")

    def trial(
        self, kind: str, recorders: tuple[WatchRecorder, WatchRecorder, WatchRecorder]
    ) -> tuple[float, float]:
        resources, slices, pods = recorders
        status = self.routed_primary() if kind == "backtoback" else self.settle()
        old, term = status["primary"], status["term"]
        pod = self.kube.get(f"/api/v1/namespaces/{self.namespace}/pods/{old}") or {}
        node = pod.get("spec", {}).get("nodeName", "")
        uid = pod.get("metadata", {}).get("uid")
        wait_for(
            lambda: _routed_now(slices.snapshot()) == {pod["status"]["podIP"]},
            interval=0.02,
            what="steady routing",
        )
        started = time.monotonic()
        if kind in ("deleted", "backtoback"):
            force_delete_pod(self.kube, self.namespace, old)
        elif kind == "container" and self.real:
            kill_container_process(self.kube, self.namespace, old)
        elif kind == "container":
            fail_container(self.kube, self.namespace, old)
        elif kind == "node":
            stop_heartbeat(self.kube, node)
        elif kind == "switchover":
            self.kube.patch(
                f"{self.path}/{NAME}", {"metadata": {"annotations": {"ftso.dev/switchover": f"@{started}"}}}
            )

        def promoted() -> Seen | None:
            return next(
                (
                    s
                    for s in resources.snapshot()
                    if s.at >= started and (s.object.get("status") or {}).get("term", 0) > term
                ),
                None,
            )

        seen = wait_for(promoted, timeout=120, interval=0.05, what=f"a promotion after {kind}")
        new = seen.object["status"]["primary"]
        if kind == "container" and not self.real:
            # The kwok stage fails the container a moment after it is asked to; count from when it shows.
            started = next(
                s.at
                for s in pods.snapshot()
                if s.object["metadata"]["uid"] == uid
                and any(
                    "terminated" in (c.get("state") or {})
                    for c in s.object.get("status", {}).get("containerStatuses") or []
                )
            )

        def routed() -> float | None:
            ip = _pod_ip(pods.snapshot(), new, started)
            return next(
                (at for at, ips in _ready_ips(slices.snapshot(), started) if ip and ips == {ip}), None
            )

        routed_at = wait_for(routed, timeout=120, interval=0.05, what=f"{new} routed after {kind}")
        if kind == "node":
            resume_heartbeat(self.kube, node)
            wait_for(lambda: lease_age(self.kube, node) < 12, timeout=60, what=f"{node} heartbeat back")
        return seen.at - started, routed_at - started


class Churn:
    """Load beside the measured service: `services` more FaultTolerantServices of 3 in the same namespace,
    served by the same operator, one of whose pods is force-deleted every `interval` seconds."""

    def __init__(self, kube: Kube, namespace: str, services: int, interval: float) -> None:
        self.kubeconfig = kube.kubeconfig
        self.namespace = namespace
        self.interval = interval
        self.deleted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        path = f"/apis/ftso.dev/v1alpha1/namespaces/{namespace}/faulttolerantservices"
        for i in range(services):
            kube.create(path, _load_service(f"load-{i}"))
        wait_for(
            lambda: sum(condition(r, "Ready") == "True" for r in kube.items(path)) == services + 1,
            timeout=300,
            what=f"{services} load services Ready",
        )

    def __enter__(self) -> Churn:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        kube = Kube(self.kubeconfig)
        try:
            while not self._stop.wait(self.interval):
                pods = [
                    p["metadata"]["name"]
                    for p in kube.items(f"/api/v1/namespaces/{self.namespace}/pods", "ftso.dev/service")
                    if p["metadata"]["labels"]["ftso.dev/service"] != NAME
                ]
                if pods:
                    force_delete_pod(kube, self.namespace, random.choice(pods))
                    self.deleted += 1
        finally:
            kube.close()


class LoadWave:
    """`services` FaultTolerantServices of 3 created in `namespace` on a thread of their own; `busy()`
    tells whether the operator still has work from them (not all Ready yet, or the namespace still
    going)."""

    def __init__(self, kube: Kube, namespace: str, services: int) -> None:
        self.kube = kube
        self.namespace = namespace
        self.services = services
        self.path = f"/apis/ftso.dev/v1alpha1/namespaces/{namespace}/faulttolerantservices"
        self._thread = threading.Thread(target=self._create_all, daemon=True)

    def start_creating(self) -> None:
        self._thread.start()

    def _create_all(self) -> None:
        kube = Kube(self.kube.kubeconfig)
        try:
            for i in range(self.services):
                kube.create(self.path, _load_service(f"load-{i}"))
        finally:
            kube.close()

    def creating(self) -> bool:
        if self._thread.is_alive():
            return True
        return sum(condition(r, "Ready") == "True" for r in self.kube.items(self.path)) < self.services

    def start_deleting(self) -> None:
        self.kube.delete(f"/api/v1/namespaces/{self.namespace}")

    def deleting(self) -> bool:
        return self.kube.get(f"/api/v1/namespaces/{self.namespace}") is not None


def run_under_load(
    bench: FtsBench,
    recorders: tuple[WatchRecorder, WatchRecorder, WatchRecorder],
    wave: LoadWave,
    trials: int,
) -> None:
    for phase, start, busy in (
        ("created", wave.start_creating, wave.creating),
        ("deleted", wave.start_deleting, wave.deleting),
    ):
        bench.settle()
        start()
        decided, routed, during = [], [], 0
        for _ in range(trials):
            loaded = busy()
            d, r = bench.trial("deleted", recorders)
            during += loaded and busy()
            decided.append(d)
            routed.append(r)
        still = "still under way" if busy() else "done"
        print(
            f"  while {wave.services} services are {phase} ({during} of {trials} trials wholly inside; {still}):"
        )
        print(f"    new primary in status: {percentiles(decided)}", flush=True)
        print(f"    -primary routed:       {percentiles(routed)}", flush=True)
        if phase == "created":
            wait_for(lambda: not wave.creating(), timeout=900, interval=2, what="the load services Ready")


def _load_service(name: str) -> dict[str, Any]:
    container = {"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}]}
    return {
        "apiVersion": "ftso.dev/v1alpha1",
        "kind": "FaultTolerantService",
        "metadata": {"name": name},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [container], **FAKE_NODES}}},
    }


def run_baseline(
    kube: Kube, kind: str, trials: int, cap: float, real: bool = False
) -> tuple[list[float], list[float]]:
    """A StatefulSet of 3 behind a Service; the same faults on one of its pods."""
    namespace = new_namespace(kube, "bench-sts")
    template = {
        "metadata": {"labels": {"app": "sts"}},
        "spec": {
            "containers": [
                {
                    **_container(real),
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 5},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 10},
                }
            ],
            **({} if real else FAKE_NODES),
        },
    }
    kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/statefulsets",
        {
            "metadata": {"name": "sts"},
            "spec": {
                "replicas": 3,
                "serviceName": "sts",
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": "sts"}},
                "template": template,
            },
        },
    )
    kube.create(
        f"/api/v1/namespaces/{namespace}/services",
        {"metadata": {"name": "sts"}, "spec": {"selector": {"app": "sts"}, "ports": [{"port": 8080}]}},
    )
    unrouted: list[float] = []
    replaced: list[float] = []
    # A restarted container keeps its pod and address: back when it is routed again.
    keeps_ip = kind == "container" and real
    with WatchRecorder(
        kube.kubeconfig,
        f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
        "kubernetes.io/service-name=sts",
    ) as slices:
        for trial in range(trials):
            pods = wait_for(
                lambda: (
                    (p := kube.items(f"/api/v1/namespaces/{namespace}/pods", "app=sts"))
                    and len(p) == 3
                    and all(pod_ready(x) for x in p)
                    and p
                ),
                timeout=120,
                what="3 ready pods",
            )
            # Each pod in turn: a real container killed again and again waits out the kubelet's back-off.
            victim = sorted(pods, key=lambda p: p["metadata"]["name"])[trial % len(pods)]
            ip, node = victim["status"]["podIP"], victim["spec"]["nodeName"]
            wait_for(lambda ip=ip: ip in _routed_now(slices.snapshot()), what="victim routed")
            started = time.monotonic()
            if kind == "deleted":
                force_delete_pod(kube, namespace, victim["metadata"]["name"])
            elif kind == "container" and real:
                kill_container_process(kube, namespace, victim["metadata"]["name"])
            elif kind == "container":
                fail_container(kube, namespace, victim["metadata"]["name"])
            elif kind == "node":
                stop_heartbeat(kube, node)

            def gone(ip: str = ip, started: float = started) -> float | None:
                return next((at for at, ips in _ready_ips(slices.snapshot(), started) if ip not in ips), None)

            def back(ip: str = ip, started: float = started) -> float | None:
                gone_at = gone(ip, started)
                return next(
                    (
                        at
                        for at, ips in _ready_ips(slices.snapshot(), started)
                        if gone_at is not None and at >= gone_at and len(ips if keeps_ip else ips - {ip}) == 3
                    ),
                    None,
                )

            try:
                unrouted.append(
                    wait_for(gone, timeout=cap, interval=0.1, what="the dead pod unrouted") - started
                )
                replaced.append(
                    wait_for(back, timeout=cap, interval=0.1, what="a replacement routed") - started
                )
            except AssertionError:
                replaced.append(float("inf"))
            if kind == "node":
                resume_heartbeat(kube, node)
                kube.delete(f"/api/v1/namespaces/{namespace}/pods/{victim['metadata']['name']}", grace=0)
                heal_all_nodes(kube)
                wait_for(lambda node=node: lease_age(kube, node) < 12, timeout=60, what="heartbeat back")
    kube.delete(f"/api/v1/namespaces/{namespace}")
    return unrouted, replaced


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--baseline-trials", type=int, default=30)
    parser.add_argument(
        "--baseline-node-trials", type=int, default=2, help="each waits for Kubernetes' own node timeouts"
    )
    parser.add_argument("--node-lost-after", type=int, default=12)
    parser.add_argument("--metrics-port", type=int, default=18082)
    parser.add_argument("--kinds", default="", help="default: every one (with --real: deleted,container)")
    parser.add_argument("--real", action="store_true", help="on the real node, with the counter's image")
    parser.add_argument(
        "--load", type=int, default=0, help="this many more services of 3 beside it, their pods churned"
    )
    parser.add_argument("--churn-interval", type=float, default=0.2, help="seconds between load pod kills")
    parser.add_argument(
        "--under-load",
        type=int,
        default=0,
        help="primaries force-deleted while this many other services are created, then deleted",
    )
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    args.kinds = args.kinds or (
        "deleted,container" if args.real else "deleted,container,node,switchover,backtoback"
    )

    kube = connect()
    if args.real:
        require_real_node(kube)
    heal_all_nodes(kube)
    namespace = new_namespace(kube, "bench-failover")
    wave = LoadWave(kube, new_namespace(kube, "bench-load"), args.under_load) if args.under_load else None
    operator = start_operator(
        kube, namespace, args.metrics_port, also=(wave.namespace,) if wave is not None else ()
    )
    print(
        f"failover benchmark{' on the real node' if args.real else ''}: {args.trials} trials per fault, "
        f"nodeLostAfterSeconds={args.node_lost_after}",
        flush=True,
    )
    results: dict[str, tuple[list[float], list[float]]] = {}
    try:
        bench = FtsBench(kube, namespace, args.node_lost_after, args.real)
        recorders = (
            WatchRecorder(kube.kubeconfig, bench.path),
            WatchRecorder(
                kube.kubeconfig,
                f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                f"kubernetes.io/service-name={NAME}-primary",
            ),
            WatchRecorder(kube.kubeconfig, f"/api/v1/namespaces/{namespace}/pods", "ftso.dev/service"),
        )
        for recorder in recorders:
            recorder.__enter__()
        churn = Churn(kube, namespace, args.load, args.churn_interval) if args.load else None
        if churn is not None:
            churn.__enter__()
            print(f"  under load: {args.load} more services, a pod killed every {args.churn_interval}s")
        if wave is not None:
            run_under_load(bench, recorders, wave, args.trials)
            args.kinds = ""
        for kind in filter(None, args.kinds.split(",")):
            decided, routed = [], []
            for _ in range(args.trials):
                d, r = bench.trial(kind, recorders)
                decided.append(d)
                routed.append(r)
            results[kind] = (decided, routed)
            print(f"  ftso {kind:<11} new primary in status: {percentiles(decided)}", flush=True)
            print(f"  ftso {kind:<11} -primary routed:       {percentiles(routed)}", flush=True)
        if churn is not None:
            churn.__exit__()
            print(f"  load pods killed during the trials: {churn.deleted}")
        for recorder in recorders:
            recorder.__exit__()
    finally:
        operator.stop()
        kube.delete(f"/api/v1/namespaces/{namespace}")
        if wave is not None:
            kube.delete(f"/api/v1/namespaces/{wave.namespace}")
    baselines: dict[str, Callable[[], tuple[list[float], list[float]]]] = {
        "deleted": lambda: run_baseline(kube, "deleted", args.baseline_trials, 120, args.real),
        "container": lambda: run_baseline(kube, "container", args.baseline_trials, 120, args.real),
        "node": lambda: run_baseline(kube, "node", args.baseline_node_trials, 150),
    }
    for kind in filter(None, args.kinds.split(",")):
        if kind in baselines:
            unrouted, replaced = baselines[kind]()
            print(f"  StatefulSet {kind:<11} dead pod unrouted:   {percentiles(unrouted)}", flush=True)
            print(f"  StatefulSet {kind:<11} replacement routed:  {percentiles(replaced)}", flush=True)
    kube.close()


if __name__ == "__main__":
    main()
