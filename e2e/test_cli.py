"""`kubectl ftso`, found by kubectl as a plugin: readable tables and exit codes a script can trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from e2e.fts import Fts, manifest
from e2e.kube import Kube, tool_path, wait_for
from e2e.operator_process import OperatorProcess


def kubectl_ftso(kube: Kube, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "KUBECONFIG": kube.kubeconfig,
    }
    return subprocess.run(
        [tool_path("kubectl"), "ftso", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_status_pause_resume(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    fts = Fts(kube, namespace)
    fts.create(manifest())
    status = fts.wait_ready()
    result = kubectl_ftso(kube, "status", "svc", "-n", namespace)
    assert result.returncode == 0, result.stderr
    assert "Ready=True" in result.stdout
    header = result.stdout.splitlines()[
        result.stdout.splitlines().index(
            next(line for line in result.stdout.splitlines() if line.startswith("POD"))
        )
    ]
    assert header.split() == ["POD", "ROLE", "HEALTH", "SERVING", "NODE", "ZONE", "SINCE", "REASON"]
    assert f"{status['primary']}   primary" in result.stdout
    assert kubectl_ftso(kube, "status", "nope", "-n", namespace).returncode == 1
    as_json = kubectl_ftso(kube, "status", "svc", "-n", namespace, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["status"]["primary"] == status["primary"]

    assert kubectl_ftso(kube, "pause", "svc", "-n", namespace).returncode == 0
    wait_for(lambda: fts.status().get("phase") == "Paused", what="phase Paused")
    victim = next(
        p["metadata"]["name"] for p in fts.live_pods() if p["metadata"]["name"] != status["primary"]
    )
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/{victim}", grace=0)
    wait_for(lambda: fts.pod(victim) is None, what="the pod gone")
    assert kubectl_ftso(kube, "status", "svc", "-n", namespace).returncode == 3, (
        "not Ready while a pod is missing"
    )
    assert fts.pod(victim) is None, "paused: nothing replaced"
    assert kubectl_ftso(kube, "resume", "svc", "-n", namespace).returncode == 0
    fts.wait_ready()
    assert kubectl_ftso(kube, "status", "svc", "-n", namespace).returncode == 0
