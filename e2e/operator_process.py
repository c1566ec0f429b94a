"""The operator under test, run as the real `ftso run` process against the local cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: str,
        log_path: Path,
        namespaces: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        *,
        launcher: tuple[str, ...] = ("ftso",),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.namespaces = namespaces
        self.extra = extra
        # The module run with `python -m` and its own arguments: `ftso`, or a test wrapper around it.
        self.launcher = launcher
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        args = [
            sys.executable,
            "-m",
            *self.launcher,
            "--kubeconfig",
            self.kubeconfig,
            "run",
            "--liveness",
            "",
            *self.extra,
        ]
        for namespace in self.namespaces:
            args += ["--namespace", namespace]
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child process owns it)
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        log.close()
        return self

    def kill(self) -> None:
        """As a crash would: no cleanup."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class OperatorPair:
    """Two replicas of the operator electing a leader through a Lease in the test's namespace, as the
    chart runs it. Looks like one OperatorProcess to a test: kill, stop and start act on both."""

    LEASE_SECONDS = 4

    def __init__(self, kubeconfig: str, log_dir: Path, namespace: str) -> None:
        election = ("--leader-election-namespace", namespace, "--lease-seconds", str(self.LEASE_SECONDS))
        self.replicas = [
            OperatorProcess(kubeconfig, log_dir / f"{namespace}-{i}.log", (namespace,), election)
            for i in range(2)
        ]

    def start(self) -> OperatorPair:
        for replica in self.replicas:
            replica.start()
        return self

    def kill(self) -> None:
        for replica in self.replicas:
            replica.kill()

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()

    def restart(self) -> None:
        self.kill()
        self.start()

    @property
    def alive(self) -> bool:
        return any(r.alive for r in self.replicas)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- replica {i} ---\n{r.log_tail(lines)}" for i, r in enumerate(self.replicas))
