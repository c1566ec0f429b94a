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
    return kube


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
