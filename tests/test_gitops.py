"""The GitOps examples: the Argo CD health check runs (in a real Lua) against statuses the operator writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

from ftso.reconcile import decide

from .factories import observed, pod, raw_spec

GITOPS = Path(__file__).resolve().parent.parent / "examples" / "gitops"
SCRIPT = (GITOPS / "argocd" / "health.lua").read_text()


def _health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return str(result["status"]), str(result["message"] or "")


def _resource(spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"generation": 1}, "spec": spec, "status": status}


def test_ready_is_healthy() -> None:
    pods = [pod(0, role="primary"), pod(1), pod(2)]
    status = decide(observed(pods, status={"primary": "demo-0", "term": 1})).status
    assert _health(_resource(raw_spec(), status))[0] == "Healthy"


def test_new_resource_is_progressing() -> None:
    status = decide(observed([])).status
    assert _health(_resource(raw_spec(), status))[0] == "Progressing"
    assert _health({"metadata": {"generation": 1}, "spec": raw_spec()})[0] == "Progressing"


def test_unobserved_generation_is_progressing() -> None:
    pods = [pod(0, role="primary"), pod(1), pod(2)]
    status = decide(observed(pods, status={"primary": "demo-0", "term": 1})).status
    resource = _resource(raw_spec(), status)
    resource["metadata"]["generation"] = 2
    assert _health(resource)[0] == "Progressing"


def test_invalid_spec_is_degraded() -> None:
    spec = raw_spec()
    spec["template"]["metadata"]["labels"]["ftso.dev/role"] = "x"
    status = decide(observed([], spec=spec)).status
    health, message = _health(_resource(spec, status))
    assert health == "Degraded" and "reserved" in message


def test_no_serving_pods_after_trying_is_degraded() -> None:
    pods = [pod(0, phase="Failed", terminated=True, deleting=True)]
    status = decide(
        observed(pods, spec=raw_spec(replicas=1, paused=False), status={"primary": "", "term": 1})
    ).status
    status["conditions"] = [
        {**c, "status": "False"} if c["type"] == "Progressing" else c for c in status["conditions"]
    ]
    assert _health(_resource(raw_spec(replicas=1), status))[0] == "Degraded"


def test_paused_is_suspended() -> None:
    status = decide(observed([], spec=raw_spec(paused=True))).status
    assert _health(_resource(raw_spec(paused=True), status))[0] == "Suspended"


def test_configmap_patch_embeds_the_same_script() -> None:
    patch = yaml.safe_load((GITOPS / "argocd" / "argocd-cm-patch.yaml").read_text())
    assert (
        patch["data"]["resource.customizations.health.ftso.dev_FaultTolerantService"].strip()
        == SCRIPT.strip()
    )


@pytest.mark.parametrize("path", sorted(GITOPS.rglob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents and all("apiVersion" in d and "kind" in d for d in documents)


def test_flux_replaces_crds_on_install_and_upgrade() -> None:
    release = next(
        d
        for d in yaml.safe_load_all((GITOPS / "flux" / "helmrelease.yaml").read_text())
        if d["kind"] == "HelmRelease"
    )
    assert release["spec"]["install"]["crds"] == "CreateReplace"
    assert release["spec"]["upgrade"]["crds"] == "CreateReplace"
