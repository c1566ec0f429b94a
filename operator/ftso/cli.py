"""`ftso` and `kubectl ftso`: run the operator, print the CRD, inspect resources."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ftso import names
from ftso.client import ApiError, KubeClient
from ftso.settings import OperatorSettings


def _run(args: argparse.Namespace) -> int:
    import kopf

    from ftso import handlers  # noqa: F401  (registers the handlers)

    settings = OperatorSettings(
        namespaces=tuple(args.namespace or ()),
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


def _crd(_: argparse.Namespace) -> int:
    from ftso.api.crd import render_crd_yaml

    sys.stdout.write(render_crd_yaml())
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
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
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
    return 0 if conditions.get("Ready", {}).get("status") == "True" else 3


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


def build_parser() -> argparse.ArgumentParser:
    prog = "kubectl ftso" if os.path.basename(sys.argv[0]).startswith("kubectl-") else "ftso"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Fault-Tolerant Service Operator. Exit codes: 0 done (status: Ready), 1 refused or not "
        "found, 2 error or timeout, 3 status: not Ready.",
    )
    parser.add_argument(
        "--kubeconfig", help="path of the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", help="kubeconfig context")
    commands = parser.add_subparsers(dest="command", required=True)

    _add_run(commands)
    _add_commands(commands)
    return parser


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="run the operator")
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


def _add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    crd = commands.add_parser("crd", help="print the CustomResourceDefinition")
    crd.set_defaults(func=_crd)

    status = commands.add_parser(
        "status", help="show a resource's pods, roles and health (exit 0 when Ready)"
    )
    status.add_argument("name")
    status.add_argument("--namespace", "-n", dest="namespace_", default="default")
    status.set_defaults(func=_status)

    switchover = commands.add_parser(
        "switchover",
        help="planned change of primary: to --to POD, or to the best healthy replica (exit 0 done, 1 refused)",
    )
    switchover.add_argument("name")
    switchover.add_argument("--to", help="the replica to promote (default: the best healthy one)")
    switchover.add_argument("--namespace", "-n", dest="namespace_", default="default")
    switchover.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    switchover.set_defaults(func=_switchover)

    checkpoint = commands.add_parser("checkpoint", help="take a checkpoint now (joins one that is running)")
    checkpoint.add_argument("name")
    checkpoint.add_argument("--namespace", "-n", dest="namespace_", default="default")
    checkpoint.add_argument("--wait", action="store_true", help="wait for the result (exit 1 when it failed)")
    checkpoint.add_argument("--timeout", type=float, default=300.0)
    checkpoint.set_defaults(func=_checkpoint)

    restore = commands.add_parser("restore", help="restore new and replaced pods from a checkpoint")
    restore.add_argument("name")
    restore.add_argument("--id", help="checkpoint id (default: the latest successful one)")
    restore.add_argument("--namespace", "-n", dest="namespace_", default="default")
    restore.set_defaults(func=_restore)

    for verb, text in (
        ("pause", "stop every decision and action (status is still reported)"),
        ("resume", "undo pause"),
    ):
        command = commands.add_parser(verb, help=text)
        command.add_argument("name")
        command.add_argument("--namespace", "-n", dest="namespace_", default="default")
        command.set_defaults(func=_set_paused)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
