"""The command line: its defaults are the operator settings' defaults (one definition), and it finds the
namespace, context and kubeconfig as kubectl does, with the flags before or after the subcommand."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

import ftso
from ftso import cli
from ftso.completion import subcommands
from ftso.settings import OperatorSettings


def test_run_flags_default_to_the_operator_settings() -> None:
    args = cli.build_parser().parse_args(["run"])
    assert (args.workers, args.resync_seconds, args.max_lost_node_share) == (
        OperatorSettings.workers,
        OperatorSettings.resync_seconds,
        OperatorSettings.max_lost_node_share,
    )
    assert (args.liveness, args.leader_election_name, args.lease_seconds) == (
        OperatorSettings.liveness_endpoint,
        OperatorSettings.leader_election_name,
        OperatorSettings.lease_seconds,
    )


# -- the commands, against a fake API server on a loopback port (no cluster) --------------------------------

RESOURCE = {
    "apiVersion": "ftso.dev/v1alpha1",
    "kind": "FaultTolerantService",
    "metadata": {"name": "demo", "managedFields": [{"manager": "kubectl"}]},
    "spec": {"mode": "PrimaryReplica", "replicas": 1},
    "status": {
        "phase": "Ready",
        "primary": "demo-0",
        "term": 2,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllPodsServing"}],
        "pods": [{"name": "demo-0", "role": "primary", "health": "Healthy", "serving": True}],
    },
}


class FakeApiServer:
    """Answers GETs of FaultTolerantServices it holds, by namespace, and records every path asked for."""

    def __init__(self, resources: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.resources = resources
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                match = re.fullmatch(
                    r"/apis/ftso\.dev/v1alpha1/namespaces/([^/]+)/faulttolerantservices/([^/]+)", self.path
                )
                found = server.resources.get((match[1], match[2])) if match else None
                body = json.dumps(found or {"kind": "Status", "reason": "NotFound", "message": "not found"})
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer(
        {
            (ns, "demo"): {**RESOURCE, "metadata": {**RESOURCE["metadata"], "namespace": ns}}
            for ns in ("team-a", "team-b", "default", "elsewhere")
        }
    )
    thread = threading.Thread(target=server.http.serve_forever, daemon=True)
    thread.start()
    yield server
    server.http.shutdown()
    server.http.server_close()


@pytest.fixture
def kubeconfig(tmp_path: Path, api: FakeApiServer) -> str:
    """Contexts as kubectl users have them: the current one with a namespace, another, one without."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        f"clusters: [{{name: c, cluster: {{server: '{api.url}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts:\n"
        "- {name: a, context: {cluster: c, user: u, namespace: team-a}}\n"
        "- {name: b, context: {cluster: c, user: u, namespace: team-b}}\n"
        "- {name: bare, context: {cluster: c, user: u}}\n"
    )
    return str(path)


def _asked_namespaces(api: FakeApiServer) -> list[str]:
    return [path.split("/")[5] for path in api.paths]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out == f"{ftso.__version__}\n"


def test_the_namespace_defaults_to_the_kubeconfig_contexts_as_kubectls_does(
    api: FakeApiServer, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--kubeconfig", kubeconfig, "status", "demo"]) == 0  # current context: team-a
    assert cli.main(["--kubeconfig", kubeconfig, "--context", "b", "status", "demo"]) == 0
    assert cli.main(["--kubeconfig", kubeconfig, "--context", "bare", "status", "demo"]) == 0
    assert cli.main(["--kubeconfig", kubeconfig, "status", "demo", "-n", "elsewhere"]) == 0
    assert _asked_namespaces(api) == ["team-a", "team-b", "default", "elsewhere"]
    assert "FaultTolerantService team-a/demo" in capsys.readouterr().out


def test_global_flags_are_accepted_after_the_subcommand_and_win_there(
    api: FakeApiServer, kubeconfig: str
) -> None:
    assert cli.main(["status", "demo", "--kubeconfig", kubeconfig, "--context", "b"]) == 0
    assert (
        cli.main(["--context", "b", "status", "demo", "--kubeconfig", kubeconfig, "--context", "bare"]) == 0
    )
    assert cli.main(["-n", "elsewhere", "status", "demo", "--kubeconfig", kubeconfig]) == 0
    assert _asked_namespaces(api) == ["team-b", "default", "elsewhere"]
    for verb in ("switchover", "checkpoint", "restore", "pause", "resume"):
        args = cli.parse_args([verb, "demo", "--kubeconfig", kubeconfig, "--context", "b"])
        assert (args.kubeconfig, args.context, args.namespace_) == (kubeconfig, "b", "team-b")


def test_a_missing_or_unreadable_kubeconfig_leaves_the_namespace_default(tmp_path: Path) -> None:
    unreadable = tmp_path / "unreadable"
    unreadable.write_text("just a string\n")
    for path in (tmp_path / "missing", unreadable):
        assert cli.parse_args(["--kubeconfig", str(path), "status", "demo"]).namespace_ == "default"


def test_run_takes_the_connection_flags_after_it_and_watches_every_namespace_given() -> None:
    args = cli.parse_args(["-n", "a", "run", "--kubeconfig", "k", "--context", "c", "-n", "b", "-n", "a"])
    settings = cli.operator_settings(args)
    assert (settings.kubeconfig, settings.context, sorted(settings.namespaces)) == ("k", "c", ["a", "b"])
    assert cli.operator_settings(cli.parse_args(["run"])).namespaces == ()  # every namespace


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_status_prints_the_resource_as_json_or_yaml_without_managed_fields(
    api: FakeApiServer, kubeconfig: str, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    assert cli.main(["--kubeconfig", kubeconfig, "status", "demo", "-o", output]) == 0
    text = capsys.readouterr().out
    printed = json.loads(text) if output == "json" else yaml.safe_load(text)
    assert printed["metadata"] == {"name": "demo", "namespace": "team-a"}
    assert (printed["spec"], printed["status"]) == (RESOURCE["spec"], RESOURCE["status"])


def test_status_in_any_output_exits_3_when_not_ready(api: FakeApiServer, kubeconfig: str) -> None:
    api.resources[("team-a", "demo")]["status"] = {"conditions": [{"type": "Ready", "status": "False"}]}
    assert cli.main(["--kubeconfig", kubeconfig, "status", "demo", "-o", "json"]) == 3
    assert cli.main(["--kubeconfig", kubeconfig, "status", "demo"]) == 3
    assert cli.main(["--kubeconfig", kubeconfig, "status", "nothing", "-o", "yaml"]) == 1


# -- shell completion: the generated bash function, run in a real bash ------------------------------------


def _complete(script: str, line: str) -> list[str]:
    """What bash offers for `line` (completing its last word; a trailing space starts a new one)."""
    import shlex
    import subprocess

    words = line.split(" ")
    program = (
        script
        + f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        + '_ftso_complete; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_are_generated_from_the_parser(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert "complete -F _ftso_complete ftso kubectl-ftso" in script
    assert ("bashcompinit" in script) == (shell == "zsh")


def test_bash_completion_offers_commands_flags_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["completion", "bash"])
    script = capsys.readouterr().out
    commands = set(subcommands(cli.build_parser()))
    assert commands >= {"status", "switchover", "completion", "version"}
    assert commands <= set(_complete(script, "ftso "))
    assert _complete(script, "ftso sw") == ["switchover"]
    assert _complete(script, "ftso status demo -") == [
        *("-h", "--help", "--kubeconfig", "--context", "--namespace", "-n", "--output", "-o")
    ]
    assert _complete(script, "ftso -n team-a status demo -o ") == ["text", "json", "yaml"]
    assert _complete(script, "ftso completion ") == ["bash", "zsh", "-h", "--help"]
    assert _complete(script, "ftso run --log-format j") == ["json"]
    assert _complete(script, "ftso status --context ") == []
