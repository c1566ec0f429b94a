"""Scale benchmark: K FaultTolerantServices of 3 replicas against K StatefulSets of 3, each side on an empty cluster.

The baseline is what a user would build by hand for the same job: each StatefulSet gets the same three
Services and a PodDisruptionBudget, submitted app by app as an install would (`--sts-order`). Prints the time
until all are Ready, the operator's peak resident memory and API requests, the ratio of the two times, the
operator's API writes during a quiet minute, and where the control plane's work went on each side (the API
server's requests and their time by verb and resource, and the watch events it sent by kind). Targets: ratio
<= 1.5 at K=1000, peak memory <= 150 MB, zero idle writes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from typing import Any

from e2e.fts import FAKE_NODES
from e2e.kube import ROOT, Kube, tool_path

from bench.common import (
    api_requests,
    apiserver_counters,
    connect,
    control_plane_cpu_seconds,
    counter_delta,
    cpu_seconds,
    new_namespace,
    peak_rss_mb,
    scrape,
    start_operator,
    wait_for_terminating_namespaces,
)

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _template(name: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {
            "containers": [
                {"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}]}
            ],
            **FAKE_NODES,
        },
    }


def _apply_all(kube: Kube, namespace: str, objects: list[dict[str, Any]]) -> None:
    # kubectl apply in batches: fast to submit, and the same path for both sides of the comparison.
    for start in range(0, len(objects), 200):
        batch = {"apiVersion": "v1", "kind": "List", "items": objects[start : start + 200]}
        kube.kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps(batch))


class ReadyWatch:
    """Counts Ready objects from one watch stream, so that measuring costs the API server no more than any
    other watcher: a LIST of K objects every half second did (5% of its CPU at K=300 on the FTS side).
    kubectl ends its watch when the server closes the stream; it is started again, and lists again."""

    def __init__(self, kube: Kube, resource: str, namespace: str, ready_field: str, ready_value: str) -> None:
        template = f'{{.metadata.name}} {{{ready_field}}}{{"\\n"}}'
        self._command = [
            *(tool_path("kubectl"), "--kubeconfig", kube.kubeconfig, "get", resource, "-n", namespace),
            *("--watch", "-o", f"jsonpath={template}"),
        ]
        self._log = ROOT / ".e2e-logs" / f"bench-watch-{namespace}.log"
        self._ready_value = ready_value
        self._ready: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._process: subprocess.Popen[str] | None = None
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        self._log.parent.mkdir(exist_ok=True)
        with self._log.open("a") as log:
            while not self._closed:
                process = subprocess.Popen(self._command, stdout=subprocess.PIPE, stderr=log, text=True)
                self._process = process
                if self._closed:  # closed while this one started
                    process.kill()
                assert process.stdout is not None
                for line in process.stdout:
                    name, _, value = line.strip().partition(" ")
                    if name:
                        with self._lock:
                            self._ready[name] = value == self._ready_value
                process.wait()
                if not self._closed:
                    time.sleep(0.2)

    def count(self) -> int:
        with self._lock:
            return sum(self._ready.values())

    def close(self) -> None:
        self._closed = True
        if self._process is not None:
            self._process.kill()
            self._process.wait()


def _create_and_time(
    kube: Kube,
    namespace: str,
    objects: list[dict[str, Any]],
    watch: ReadyWatch,
    what: str,
    k: int,
    timeout: float,
) -> float:
    """Seconds from the first create until `watch` counts k Ready; the watch is closed either way."""
    try:
        started = time.monotonic()
        _apply_all(kube, namespace, objects)
        while (ready := watch.count()) < k:
            if time.monotonic() - started > timeout:
                raise SystemExit(f"{what}: only {ready}/{k} Ready after {timeout:.0f}s")
            time.sleep(0.1)
        return time.monotonic() - started
    finally:
        watch.close()


def _until_services_exist(kube: Kube, namespace: str, count: int, elapsed: float, timeout: float) -> float:
    """The clock stops when every Service exists too, as the baseline's stops only after its Services were
    created: the Ready condition does not say whether they exist."""
    started = time.monotonic() - elapsed
    while len(kube.items(f"/api/v1/namespaces/{namespace}/services")) < count:
        if time.monotonic() - started > timeout:
            raise SystemExit(f"FaultTolerantServices: fewer than {count} Services after {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - started


def run_fts(kube: Kube, k: int, timeout: float, idle_seconds: float, port: int) -> dict[str, Any]:
    namespace = new_namespace(kube, "bench-fts")
    operator = start_operator(kube, namespace, port)
    try:
        objects = [
            {
                "apiVersion": "ftso.dev/v1alpha1",
                "kind": "FaultTolerantService",
                "metadata": {"name": f"s{i}"},
                "spec": {"replicas": 3, "template": _template(f"s{i}")},
            }
            for i in range(k)
        ]
        assert operator.process is not None
        plane_before = control_plane_cpu_seconds()
        counters_before = apiserver_counters(kube)
        watch = ReadyWatch(
            kube, "faulttolerantservices", namespace, '.status.conditions[?(@.type=="Ready")].status', "True"
        )
        total = _create_and_time(kube, namespace, objects, watch, "FaultTolerantServices", k, timeout)
        total = _until_services_exist(kube, namespace, 3 * k, total, timeout)
        operator_cpu = cpu_seconds(operator.process.pid)
        plane_after = control_plane_cpu_seconds()
        counters = counter_delta(apiserver_counters(kube), counters_before)
        requests_ready = api_requests(scrape(port))
        time.sleep(2)  # let the last status events settle before the quiet minute starts
        before = api_requests(scrape(port))
        time.sleep(idle_seconds)
        after = api_requests(scrape(port))
        idle_writes = sum(after.get(v, 0) - before.get(v, 0) for v in WRITES)
        assert operator.process is not None
        return {
            "namespace": namespace,
            "seconds": total,
            "operator_cpu": operator_cpu,
            "plane_cpu": {k: plane_after.get(k, 0) - v for k, v in plane_before.items()},
            "requests": requests_ready,
            "idle_writes": idle_writes,
            "idle_requests": sum(after.values()) - sum(before.values()),
            "peak_rss_mb": peak_rss_mb(operator.process.pid),
            "apiserver": counters,
        }
    finally:
        operator.stop()


def _baseline_app(i: int, services: int, pdb: bool) -> list[dict[str, Any]]:
    """One app as a user writes it: its Services first (the Kubernetes configuration best practice, and the
    order Helm installs kinds in), then its PodDisruptionBudget, then its StatefulSet."""
    name = f"s{i}"
    routes = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{name}-{n}"},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8080}]},
        }
        for n in range(services)
    ]
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": name}}},
    }
    workload = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 3,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": _template(name),
        },
    }
    return [*routes, *([budget] if pdb else []), workload]


def _baseline_objects(k: int, services: int, pdb: bool, order: str) -> list[dict[str, Any]]:
    apps = [_baseline_app(i, services, pdb) for i in range(k)]
    if order == "by-app":
        return [obj for app in apps for obj in app]
    # by-kind: every StatefulSet first, then every Service, then every budget; most Services then come
    # after their pods are Ready, so their Endpoints are written once, which no per-app install does.
    rank = {"StatefulSet": 0, "Service": 1, "PodDisruptionBudget": 2}
    return sorted((obj for app in apps for obj in app), key=lambda obj: rank[obj["kind"]])


def run_statefulsets(
    kube: Kube, k: int, timeout: float, services: int, pdb: bool, order: str
) -> dict[str, Any]:
    namespace = new_namespace(kube, "bench-sts")
    objects = _baseline_objects(k, services, pdb, order)
    counters_before = apiserver_counters(kube)
    watch = ReadyWatch(kube, "statefulsets", namespace, ".status.readyReplicas", "3")
    seconds = _create_and_time(kube, namespace, objects, watch, "StatefulSets", k, timeout)
    counters = counter_delta(apiserver_counters(kube), counters_before)
    return {"namespace": namespace, "seconds": seconds, "apiserver": counters}


def _breakdown(
    sts: dict[tuple[str, str, str], float], fts: dict[tuple[str, str, str], float], k: int
) -> None:
    """Side by side, the rows that matter: writes, and watch events by kind."""
    floor = max(10.0, 0.2 * k)  # leave out the background
    rows = sorted(
        {
            k
            for k in (*sts, *fts)
            if max(sts.get(k, 0), fts.get(k, 0)) >= floor
            and (k[0] == "watch events" or (k[0] == "requests" and k[1] not in ("GET", "LIST", "WATCH")))
        },
        key=lambda k: (k[0], -(fts.get(k, 0) + sts.get(k, 0))),
    )
    print(f"  {'API server':<44} {'StatefulSets':>13} {'FTS':>9}   (time in the API server, s)")
    for row in rows:
        what, verb, resource = row
        seconds = ("seconds", verb, resource)
        timing = f"   ({sts.get(seconds, 0):.1f} / {fts.get(seconds, 0):.1f})" if what == "requests" else ""
        label = f"{what} {verb} {resource}".replace("  ", " ")
        print(f"  {label:<44} {sts.get(row, 0):>13.0f} {fts.get(row, 0):>9.0f}{timing}")


def _cpu(by_process: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in sorted(by_process.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "-k", type=int, default=100, help="resources on each side (default 100; the target is at 1000)"
    )
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--metrics-port", type=int, default=18081)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark namespaces")
    parser.add_argument(
        "--sts-services", type=int, default=3, help="Services per StatefulSet in the baseline (ftso makes 3)"
    )
    parser.add_argument(
        "--sts-order",
        choices=("by-app", "by-kind"),
        default="by-app",
        help="baseline submission order: each app's Services, PDB and StatefulSet together (default, as a"
        " user installs an app), or every StatefulSet before any Service (the order used before 2026-11-27)",
    )
    parser.add_argument(
        "--no-sts-pdb", action="store_true", help="no PodDisruptionBudget per StatefulSet (ftso makes one)"
    )
    args = parser.parse_args()

    kube = connect()
    print(f"scale benchmark: K={args.k} resources x 3 replicas ({3 * args.k} pods per side)", flush=True)
    plane_before = control_plane_cpu_seconds()
    sts = run_statefulsets(kube, args.k, args.timeout, args.sts_services, not args.no_sts_pdb, args.sts_order)
    plane_after = control_plane_cpu_seconds()
    sts["plane_cpu"] = {k: plane_after.get(k, 0) - v for k, v in plane_before.items()}
    pdb = "" if args.no_sts_pdb else " and a PDB"
    label = f"StatefulSets ({args.sts_services} Services{pdb} each, {args.sts_order})"
    print(f"  {label:<40} all Ready in {sts['seconds']:.1f} s", flush=True)
    if not args.keep:
        # Each side starts from the same empty control plane: the baseline's 3K pods and Services would
        # otherwise weigh on every informer, the scheduler and each ClusterIP allocation (the API server
        # lists every allocated address per Service create) during the FTS side only.
        kube.delete(f"/api/v1/namespaces/{sts['namespace']}")
        wait_for_terminating_namespaces(kube)
    fts = run_fts(kube, args.k, args.timeout, args.idle_seconds, args.metrics_port)
    print(f"  FaultTolerantServices       all Ready in {fts['seconds']:.1f} s")
    print(f"  ratio FTS / StatefulSet     {fts['seconds'] / sts['seconds']:.2f}   (target <= 1.5 at K=1000)")
    print(f"  CPU seconds, StatefulSets   {_cpu(sts['plane_cpu'])}")
    print(f"  CPU seconds, FTS            operator {fts['operator_cpu']:.1f}; {_cpu(fts['plane_cpu'])}")
    print(f"  operator peak RSS           {fts['peak_rss_mb']:.1f} MB   (target <= 150 MB)")
    total = sum(fts["requests"].values())
    by_verb = ", ".join(f"{v} {n}" for v, n in sorted(fts["requests"].items()))
    print(f"  operator API requests       {total} ({by_verb}), {total / (3 * args.k):.2f} per pod")
    print(
        f"  idle {args.idle_seconds:.0f} s: API writes      {fts['idle_writes']}   (target 0); all requests {fts['idle_requests']}"
    )
    _breakdown(sts["apiserver"], fts["apiserver"], args.k)
    if not args.keep:
        kube.delete(f"/api/v1/namespaces/{fts['namespace']}")
    kube.close()


if __name__ == "__main__":
    main()
