"""A synchronous view of the real API server for tests, plus the kubectl binary the cluster build made."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ftso.client import ApiError, KubeClient

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def kubeconfig_path() -> str:
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    return subprocess.run(
        ["make", "-s", "kubeconfig"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def tool_path(name: str) -> str:
    cache = os.environ.get("FTSO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ftso"
    )
    return os.path.join(cache, "bin", name)


class Kube:
    """Plain-dict API calls over the operator's own client, run to completion one by one."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self._loop = asyncio.new_event_loop()
        self.client = KubeClient.from_environment(kubeconfig)

    def close(self) -> None:
        self._loop.run_until_complete(self.client.close())
        self._loop.close()

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._loop.run_until_complete(self.client.request(method, path, **kwargs))

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except ApiError as error:
            if error.not_found:
                return None
            raise

    def items(self, path: str, selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else None
        return list(self.request("GET", path, params=params).get("items") or [])

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body=body)

    def patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def delete(self, path: str, *, grace: int | None = None) -> None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        try:
            self.request("DELETE", path, body=body)
        except ApiError as error:
            if not error.not_found:
                raise

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [tool_path("kubectl"), "--kubeconfig", self.kubeconfig, *args],
            check=False,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, manifest: Mapping[str, Any] | str, namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        self.kubectl(*args, stdin=text)


def ftso_cli(kube: Kube, *args: str) -> subprocess.CompletedProcess[str]:
    """The `ftso` command line, as a user runs it, against the local cluster."""
    return subprocess.run(
        [sys.executable, "-m", "ftso", "--kubeconfig", kube.kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def wait_for(
    probe: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"
) -> T:
    """Poll until `probe` returns something truthy; on timeout, fail with the last thing it saw."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except AssertionError as error:
            last = f"assertion: {error}"
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def condition(obj: Mapping[str, Any] | None, type_: str) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and condition(pod, "Ready") == "True"


def ready_endpoint_ips(kube: Kube, namespace: str, service: str) -> set[str]:
    ips: set[str] = set()
    path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    for endpoint_slice in kube.items(path, f"kubernetes.io/service-name={service}"):
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready"):
                ips.update(endpoint.get("addresses") or [])
    return ips
