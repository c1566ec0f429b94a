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


# -- ftso report: a support bundle collected from a fake API server ---------------------------------------


class RoutedApiServer:
    """Answers GET path (and labelSelector) -> (status, body); records the queries of pod logs."""

    def __init__(self, routes: dict[tuple[str, str], tuple[int, str]]) -> None:
        from urllib.parse import parse_qs, urlsplit

        self.log_queries: list[dict[str, list[str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path.endswith("/log"):
                    server.log_queries.append(query)
                selector = (query.get("labelSelector") or [""])[0]
                status, body = routes.get((url.path, selector), (404, '{"reason": "NotFound"}'))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


def _listing(*items: dict[str, Any]) -> tuple[int, str]:
    return 200, json.dumps({"items": list(items)})


def _named(kind: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "managedFields": [{"manager": "x"}]}, **extra}


def _event(about: str, reason: str) -> dict[str, Any]:
    return {
        "kind": "Event",
        "reason": reason,
        "involvedObject": {"name": about},
        "metadata": {"name": reason},
    }


REPORT_ROUTES = {
    ("/apis/ftso.dev/v1alpha1/namespaces/team-a/faulttolerantservices/demo", ""): (200, json.dumps(RESOURCE)),
    ("/api/v1/namespaces/team-a/pods", "ftso.dev/service=demo"): _listing(_named("Pod", "demo-0")),
    ("/api/v1/namespaces/team-a/services", "ftso.dev/service=demo"): _listing(
        _named("Service", "demo-primary")
    ),
    ("/apis/policy/v1/namespaces/team-a/poddisruptionbudgets", "ftso.dev/service=demo"): (
        403,
        '{"reason": "Forbidden", "message": "poddisruptionbudgets is forbidden"}',
    ),
    ("/apis/batch/v1/namespaces/team-a/jobs", "ftso.dev/service=demo"): _listing(),
    ("/api/v1/namespaces/team-a/events", ""): _listing(
        _event("demo-0", "BecamePrimary"), _event("demo-primary", "Synced"), _event("other-0", "Unrelated")
    ),
    ("/api/v1/pods", "app.kubernetes.io/name=ftso"): _listing(
        {
            "kind": "Pod",
            "metadata": {"name": "ftso-abc", "namespace": "ftso-system"},
            "spec": {"containers": [{"name": "operator"}]},
        }
    ),
    ("/api/v1/namespaces/ftso-system/pods/ftso-abc/log", ""): (200, "line one\nline two\n"),
}


def test_report_writes_one_archive_with_the_resource_its_objects_events_and_operator_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tarfile

    api = RoutedApiServer(REPORT_ROUTES)
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        f"clusters: [{{name: c, cluster: {{server: '{api.url}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: a, context: {cluster: c, user: u, namespace: team-a}}]\n"
    )
    target = tmp_path / "bundle.tar.gz"
    try:
        code = cli.main(
            ["report", "demo", "--kubeconfig", str(config), "-f", str(target), "--log-lines", "50"]
        )
    finally:
        api.http.shutdown()
    out, err = capsys.readouterr()
    assert code == 0 and out == f"{target}\n"
    assert "poddisruptionbudgets is forbidden" in err
    with tarfile.open(target) as archive:
        files = {
            m.name.split("/", 1)[1]: archive.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in archive.getmembers()
        }
    assert {"faulttolerantservice.yaml", "pods.yaml", "services.yaml", "jobs.yaml", "events.yaml"} <= set(
        files
    )
    assert "poddisruptionbudgets.yaml" not in files
    assert yaml.safe_load(files["faulttolerantservice.yaml"])["status"]["primary"] == "demo-0"
    assert "managedFields" not in files["pods.yaml"] + files["faulttolerantservice.yaml"]
    reasons = [e["reason"] for e in yaml.safe_load_all(files["events.yaml"])]
    assert reasons == ["BecamePrimary", "Synced"], "Events about the resource's objects only"
    assert files["operator/ftso-system/ftso-abc/operator.log"] == "line one\nline two\n"
    assert api.log_queries == [{"container": ["operator"], "tailLines": ["50"]}]
    assert "poddisruptionbudgets is forbidden" in files["README.txt"]


def test_report_of_a_missing_resource_writes_nothing(
    tmp_path: Path, api: FakeApiServer, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "bundle.tar.gz"
    assert cli.main(["report", "absent", "--kubeconfig", kubeconfig, "-f", str(target)]) == 1
    assert not target.exists()
    assert "not found" in capsys.readouterr().err
