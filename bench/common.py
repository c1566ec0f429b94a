"""Shared pieces of the benchmarks: the cluster, a namespace, the operator process and its metrics."""

from __future__ import annotations

import os
import re
import statistics
import time
import urllib.request
import uuid
from pathlib import Path

from e2e.kube import ROOT, Kube, kubeconfig_path
from e2e.operator_process import OperatorProcess


def connect() -> Kube:
    kube = Kube(kubeconfig_path())
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "crd/faulttolerantservices.ftso.dev", "--timeout=60s")
    wait_for_terminating_namespaces(kube)
    return kube


def wait_for_terminating_namespaces(kube: Kube, timeout: float = 900) -> None:
    """An earlier run's namespaces still being deleted would load the control plane during this one."""
    deadline = time.monotonic() + timeout
    while True:
        going = [
            n["metadata"]["name"]
            for n in kube.items("/api/v1/namespaces")
            if (n.get("status") or {}).get("phase") == "Terminating"
        ]
        if not going:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"namespaces still terminating after {timeout:.0f}s: {', '.join(going)}")
        time.sleep(1)


def new_namespace(kube: Kube, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    deadline = time.monotonic() + 60
    while kube.get(f"/api/v1/namespaces/{name}/serviceaccounts/default") is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"no default ServiceAccount in {name}")
        time.sleep(0.2)
    return name


def start_operator(
    kube: Kube, namespace: str, metrics_port: int, *extra: str, also: tuple[str, ...] = ()
) -> OperatorProcess:
    """The operator for `namespace` and the namespaces in `also`."""
    log = ROOT / ".e2e-logs" / f"bench-{namespace}.log"
    log.parent.mkdir(exist_ok=True)
    process = OperatorProcess(
        kube.kubeconfig,
        log,
        namespaces=(namespace, *also),
        extra=("--metrics-port", str(metrics_port), *extra),
    ).start()
    deadline = time.monotonic() + 30
    while True:
        try:
            scrape(metrics_port)
            return process
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the operator did not start; log: {log}") from None
            time.sleep(0.2)


def scrape(port: int) -> dict[str, float]:
    """Every sample of the operator's /metrics, by name with labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = re.match(r"^(\S+)\s+(\S+)$", line)
            if match:
                samples[match.group(1)] = float(match.group(2))
    return samples


def api_requests(samples: dict[str, float]) -> dict[str, int]:
    counts = {}
    for key, value in samples.items():
        match = re.match(r'ftso_api_requests_total\{verb="(\w+)"\}', key)
        if match:
            counts[match.group(1)] = int(value)
    return counts


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return (
        f"n={len(ordered)} p50={statistics.median(ordered):.3f}s p95={pick(0.95):.3f}s "
        f"p99={pick(0.99):.3f}s max={ordered[-1]:.3f}s"
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


APISERVER_SERIES = {
    "apiserver_request_total": "requests",
    "apiserver_request_duration_seconds_sum": "seconds",
    "apiserver_watch_events_total": "watch events",
}


def apiserver_counters(kube: Kube) -> dict[tuple[str, str, str], float]:
    """The API server's own counts, summed over codes and versions: (series, verb, resource[/sub]) -> value.
    Requests and their total time by verb and resource, and watch events sent by kind."""
    text = kube.kubectl("get", "--raw", "/metrics").stdout
    totals: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
        if not match or match.group(1) not in APISERVER_SERIES:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        resource = labels.get("resource") or labels.get("kind", "")
        if labels.get("subresource") and resource:
            resource += "/" + labels["subresource"]
        key = (APISERVER_SERIES[match.group(1)], labels.get("verb", ""), resource)
        totals[key] = totals.get(key, 0.0) + float(match.group(3))
    return totals


def counter_delta(
    after: dict[tuple[str, str, str], float], before: dict[tuple[str, str, str], float]
) -> dict[tuple[str, str, str], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def control_plane_cpu_seconds() -> dict[str, float]:
    """CPU time used so far by each control-plane process (kwokctl's binary runtime)."""
    totals: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        name = os.path.basename(cmdline)
        if "/kwok/clusters/" in cmdline and name in {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok-controller",
        }:
            try:
                totals[name] = totals.get(name, 0.0) + cpu_seconds(int(proc.name))
            except OSError:
                continue
    return totals
