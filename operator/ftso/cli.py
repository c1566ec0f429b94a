"""`ftso` and `kubectl ftso`: run the operator, print the CRD, inspect resources."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import yaml

from ftso import __version__, names
from ftso.client import ApiError, KubeClient
from ftso.credentials import kubeconfig_namespace
from ftso.report import DEFAULT_LOG_LINES
from ftso.settings import OperatorSettings


def operator_settings(args: argparse.Namespace) -> OperatorSettings:
    # `ftso -n a run` watches `a` too: before the subcommand, -n means the same as after it.
    watched = [*(args.namespace or ()), *([args.namespace_] if args.namespace_ else [])]
    return OperatorSettings(
        namespaces=tuple(dict.fromkeys(watched)),
        kubeconfig=args.kubeconfig,
        context=args.context,
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        max_lost_node_share=args.max_lost_node_share,
        liveness_endpoint=args.liveness or None,
        metrics_port=args.metrics_port or None,
        leader_election_namespace=args.leader_election_namespace or None,
        leader_election_name=args.leader_election_name,
        lease_seconds=args.lease_seconds,
        verbose=args.verbose,
    )


def _run(args: argparse.Namespace) -> int:
    import kopf

    from ftso import handlers  # noqa: F401  (registers the handlers)

    settings = operator_settings(args)
    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=args.verbose, debug=args.debug, log_format=log_format)
    if args.log_writes:
        logging.getLogger("ftso.client").setLevel(logging.DEBUG)
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
        standalone=True,
        memo=kopf.Memo(settings=settings),
    )
    return 0


def _version(_: argparse.Namespace) -> int:
    print(__version__)
    return 0


def _completion(args: argparse.Namespace) -> int:
    from ftso.completion import SCRIPTS

    sys.stdout.write(SCRIPTS[args.shell](build_parser()))
    return 0


def _crd(args: argparse.Namespace) -> int:
    from ftso.api.crd import render_crd_yaml
    from ftso.api.reference import render_api_markdown

    sys.stdout.write(render_api_markdown() if args.markdown else render_crd_yaml())
    return 0


T = TypeVar("T")


def _with_client(args: argparse.Namespace, work: Callable[[KubeClient], Awaitable[T]]) -> T:
    """Run one piece of async API work with a client for the chosen kubeconfig."""

    async def run() -> T:
        client = KubeClient.from_environment(args.kubeconfig, args.context)
        try:
            return await work(client)
        finally:
            await client.close()

    return asyncio.run(run())


def _api_failure(error: ApiError) -> int:
    print(f"error: {error.message}", file=sys.stderr)
    return 1 if error.not_found else 2


def _patch(client: KubeClient, args: argparse.Namespace, patch: dict[str, Any]) -> Awaitable[dict[str, Any]]:
    return client.merge_patch(names.KIND, args.namespace_, args.name, patch)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _status(args: argparse.Namespace) -> int:
    try:
        body = _with_client(args, lambda client: client.get(names.KIND, args.namespace_, args.name))
    except ApiError as error:
        return _api_failure(error)
    conditions = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}
    if args.output == "text":
        _print_status(args, body, conditions)
    else:
        _print_resource(body, args.output)
    return 0 if conditions.get(names.ConditionType.READY, {}).get("status") == "True" else 3


def _print_resource(body: dict[str, Any], output: str) -> None:
    # As `kubectl get -o` shows an object: everything but metadata.managedFields.
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    shown = {**body, "metadata": metadata}
    if output == "json":
        print(json.dumps(shown, indent=2))
    else:
        sys.stdout.write(yaml.safe_dump(shown, sort_keys=False))


def _print_status(args: argparse.Namespace, body: dict[str, Any], conditions: dict[str, Any]) -> None:
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    print(f"{names.KIND} {args.namespace_}/{args.name}")
    print(f"  mode: {spec.get('mode')}   phase: {status.get('phase', '-')}   term: {status.get('term', 0)}")
    print(
        f"  replicas: {spec.get('replicas')} desired, {status.get('readyReplicas', 0)} ready, "
        f"{status.get('servingReplicas', 0)} serving   primary: {status.get('primary') or '-'}"
    )
    shown = names.ConditionType
    for type_ in (
        shown.READY,
        shown.AVAILABLE,
        shown.PROGRESSING,
        shown.DEGRADED,
        shown.INVALID_SPEC,
        shown.PRIMARY_UNAVAILABLE,
        shown.REPLICA_FAILURE,
    ):
        c = conditions.get(type_)
        if c:
            print(f"  {type_}={c['status']} ({c.get('reason', '')}) {c.get('message', '')}".rstrip())
    rows = [["POD", "ROLE", "HEALTH", "SERVING", "NODE", "ZONE", "SINCE", "REASON"]]
    for pod in status.get("pods") or []:
        rows.append(
            [
                pod["name"],
                pod.get("role", ""),
                pod["health"],
                "yes" if pod.get("serving") else "no",
                pod.get("node") or "-",
                pod.get("zone") or "-",
                pod.get("since", ""),
                pod.get("reason") or "",
            ]
        )
    print(_table(rows))


async def _await_answer(
    client: KubeClient, args: argparse.Namespace, answer: Callable[[dict[str, Any]], tuple[int, str] | None]
) -> tuple[int, str]:
    """Poll the resource's status until `answer` has something to say, or the timeout passes."""
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        status = (await client.get(names.KIND, args.namespace_, args.name)).get("status") or {}
        result = answer(status)
        if result is not None:
            return result
        await asyncio.sleep(0.1)
    return 2, f"no answer within {args.timeout:.0f}s (is the operator running? is the resource paused?)"


def _report(work: Callable[[], tuple[int, str]]) -> int:
    try:
        code, message = work()
    except ApiError as error:
        return _api_failure(error)
    print(message, file=sys.stderr if code else sys.stdout)
    return code


def _switchover(args: argparse.Namespace) -> int:
    request = f"{args.to or ''}@{int(time.time() * 1000)}"

    def answer(status: dict[str, Any]) -> tuple[int, str] | None:
        reply = status.get("switchover") or {}
        if reply.get("request") != request:
            return None
        if reply.get("result") != "Completed":
            return 1, str(reply.get("message"))
        history = status.get("failovers") or []
        if history and not history[-1].get("routedAt") and "already primary" not in str(reply.get("message")):
            return None  # decided, not yet routed
        return 0, f"{reply.get('message')} (term {status.get('term')})"

    async def work(client: KubeClient) -> tuple[int, str]:
        await _patch(client, args, {"metadata": {"annotations": {names.ANNOTATION_SWITCHOVER: request}}})
        return await _await_answer(client, args, answer)

    return _report(lambda: _with_client(args, work))


def _checkpoint(args: argparse.Namespace) -> int:
    request = f"cli-{int(time.time() * 1000)}"

    def answer(status: dict[str, Any]) -> tuple[int, str] | None:
        if (status.get("checkpointSchedule") or {}).get("lastRequest") != request:
            return None
        entry = (status.get("checkpoints") or [{}])[-1]
        if args.wait and entry.get("result") not in ("Succeeded", "Failed"):
            return None
        code = 0 if entry.get("result") in ("Succeeded", "Running") else 1
        return (
            code,
            f"checkpoint {entry.get('id')}: {entry.get('result')} {entry.get('reason') or ''}".rstrip(),
        )

    async def work(client: KubeClient) -> tuple[int, str]:
        await _patch(client, args, {"metadata": {"annotations": {names.ANNOTATION_CHECKPOINT: request}}})
        return await _await_answer(client, args, answer)

    return _report(lambda: _with_client(args, work))


def _restore(args: argparse.Namespace) -> int:
    checkpoint = args.id or "latest"

    async def work(client: KubeClient) -> tuple[int, str]:
        await _patch(client, args, {"spec": {"restore": {"checkpoint": checkpoint}}})
        return (
            0,
            f"new and replaced pods of {args.namespace_}/{args.name} now restore from checkpoint {checkpoint}",
        )

    return _report(lambda: _with_client(args, work))


def _set_paused(args: argparse.Namespace) -> int:
    paused = args.command == "pause"

    async def work(client: KubeClient) -> tuple[int, str]:
        await _patch(client, args, {"spec": {"paused": paused}})
        return (
            0,
            f"{args.namespace_}/{args.name} {'paused: no decisions until resumed' if paused else 'resumed'}",
        )

    return _report(lambda: _with_client(args, work))


def _support_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ftso.report import collect, default_path, write_archive

    try:
        bundle = _with_client(
            args, lambda client: collect(client, args.namespace_, args.name, log_lines=args.log_lines)
        )
    except ApiError as error:
        return _api_failure(error)
    path = Path(args.file) if args.file else default_path(args.namespace_, args.name)
    write_archive(bundle.files, path)
    for gap in bundle.gaps:
        print(f"warning: not collected: {gap}", file=sys.stderr)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    prog = "kubectl ftso" if os.path.basename(sys.argv[0]).startswith("kubectl-") else "ftso"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Fault-Tolerant Service Operator. Exit codes: 0 done (status: Ready), 1 refused or not "
        "found, 2 error or timeout, 3 status: not Ready.",
    )
    _add_global_flags(parser, namespace=True)
    commands = parser.add_subparsers(dest="command", required=True)

    _add_run(commands)
    _add_commands(commands)
    return parser


GLOBAL_FLAGS = ("kubeconfig", "context", "namespace_")


def _add_global_flags(parser: argparse.ArgumentParser, *, namespace: bool) -> None:
    """Flags accepted before and after the subcommand, as kubectl's are. Absent unless given (SUPPRESS),
    so that a subcommand's parser does not overwrite a value given before it with its default."""
    parser.add_argument(
        "--kubeconfig",
        default=argparse.SUPPRESS,
        help="path of the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)",
    )
    parser.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context")
    if namespace:
        parser.add_argument(
            "--namespace",
            "-n",
            dest="namespace_",
            metavar="NAMESPACE",
            default=argparse.SUPPRESS,
            help="the resource's namespace (default: the kubeconfig context's, else default)",
        )


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="run the operator")
    _add_global_flags(run, namespace=False)  # run's own -n: the namespaces to watch
    run.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    run.add_argument(
        "--workers",
        type=int,
        default=OperatorSettings.workers,
        help=f"reconciles running in parallel (default {OperatorSettings.workers})",
    )
    run.add_argument(
        "--resync-seconds",
        type=float,
        default=OperatorSettings.resync_seconds,
        help="interval of the authoritative relist and look at every resource",
    )
    run.add_argument(
        "--max-lost-node-share",
        type=float,
        default=OperatorSettings.max_lost_node_share,
        help="when more than this share of nodes looks lost at once, hold node loss "
        f"(default {OperatorSettings.max_lost_node_share})",
    )
    run.add_argument(
        "--liveness", default=OperatorSettings.liveness_endpoint, help="liveness endpoint ('' to disable)"
    )
    run.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
    run.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("FTSO_LEADER_ELECTION_NAMESPACE", ""),
        help="run several replicas, one acting, elected through a Lease in this namespace",
    )
    run.add_argument(
        "--leader-election-name", default=OperatorSettings.leader_election_name, help="name of that Lease"
    )
    run.add_argument(
        "--lease-seconds",
        type=float,
        default=OperatorSettings.lease_seconds,
        help="a standby takes over after this long",
    )
    run.add_argument("--verbose", "-v", action="store_true")
    run.add_argument("--debug", action="store_true")
    run.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="json: one JSON object per line"
    )
    run.add_argument(
        "--log-writes", action="store_true", help="log every write the operator sends to the API"
    )
    run.set_defaults(func=_run)


def _add_resource_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    verb: str,
    text: str,
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """A command on one FaultTolerantService: NAME, and a namespace that defaults as kubectl's does."""
    command = commands.add_parser(verb, help=text)
    command.add_argument("name")
    _add_global_flags(command, namespace=True)
    command.set_defaults(func=func, namespaced=True)
    return command


def _add_local_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands that need no cluster."""
    commands.add_parser("version", help="print the version").set_defaults(func=_version)
    crd = commands.add_parser("crd", help="print the CustomResourceDefinition")
    crd.add_argument("--markdown", action="store_true", help="the API reference (docs/api.md) instead")
    crd.set_defaults(func=_crd)
    completion = commands.add_parser(
        "completion", help="print a shell completion script: source <(ftso completion bash)"
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(func=_completion)


def _add_report(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = _add_resource_command(
        commands,
        "report",
        "write a support bundle (.tar.gz): the resource, its pods and owned objects, their Events and "
        "the operator's log; prints its path",
        _support_report,
    )
    report.add_argument("--file", "-f", help="where to write it (default: ./ftso-report-NS-NAME-TIME.tar.gz)")
    report.add_argument(
        "--log-lines",
        type=int,
        default=DEFAULT_LOG_LINES,
        help=f"lines of each operator container's log (default {DEFAULT_LOG_LINES})",
    )


def _add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_local_commands(commands)

    status = _add_resource_command(
        commands, "status", "show a resource's pods, roles and health (exit 0 when Ready)", _status
    )
    status.add_argument(
        "--output",
        "-o",
        choices=("text", "json", "yaml"),
        default="text",
        help="json, yaml: the whole resource, as kubectl get -o prints it",
    )

    switchover = _add_resource_command(
        commands,
        "switchover",
        "planned change of primary: to --to POD, or to the best healthy replica (exit 0 done, 1 refused)",
        _switchover,
    )
    switchover.add_argument("--to", help="the replica to promote (default: the best healthy one)")
    switchover.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")

    checkpoint = _add_resource_command(
        commands, "checkpoint", "take a checkpoint now (joins one that is running)", _checkpoint
    )
    checkpoint.add_argument("--wait", action="store_true", help="wait for the result (exit 1 when it failed)")
    checkpoint.add_argument("--timeout", type=float, default=300.0)

    restore = _add_resource_command(
        commands, "restore", "restore new and replaced pods from a checkpoint", _restore
    )
    restore.add_argument("--id", help="checkpoint id (default: the latest successful one)")

    _add_resource_command(
        commands, "pause", "stop every decision and action (status is still reported)", _set_paused
    )
    _add_resource_command(commands, "resume", "undo pause", _set_paused)
    _add_report(commands)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for flag in GLOBAL_FLAGS:
        setattr(args, flag, getattr(args, flag, None))
    if getattr(args, "namespaced", False) and not args.namespace_:
        args.namespace_ = kubeconfig_namespace(args.kubeconfig, args.context)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
