"""The local control plane's processes, as kwokctl's binary runtime runs them: pause, kill, restart, check.

kwokctl keeps a cluster under $KWOK_WORKDIR/clusters/<name>/: `kwok.yaml` lists every component (binary,
args, workDir, ports, metric endpoint), `pids/<binary>.pid` and `logs/<binary>.log` are per process. Every
component runs detached (its own session, parent init) with the cluster directory as working directory.
kwokctl has no per-component command, but `kwokctl start cluster` starts exactly the components whose
process is not running, with their recorded command line: a restart here is a stop, then that. The
supervisor (`e2e/cluster/supervise.sh`) does the same for components that exit on their own; both hold
`supervise.lock` meanwhile, so neither sees the other's half-done restart.
"""

from __future__ import annotations

import fcntl
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

APISERVER = "kube-apiserver"
ETCD = "etcd"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
KWOK = "kwok-controller"
METRICS_SERVER = "metrics-server"
# Health paths other than /healthz, and components that must hold their leader lease to do any work.
# metrics-server's /livez also fails when its scrapes stall (up.sh checks the same).
HEALTH_PATHS = {ETCD: "/health", APISERVER: "/readyz", METRICS_SERVER: "/livez"}
LEADER_ELECTED = (CONTROLLER_MANAGER, SCHEDULER)


def cache_dir() -> Path:
    """Where e2e/cluster/versions.sh keeps binaries and clusters."""
    if os.environ.get("FTSO_CACHE"):
        return Path(os.environ["FTSO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ftso"


@dataclass(frozen=True)
class Component:
    name: str
    binary: str
    args: tuple[str, ...]
    workdir: Path
    metric: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def pid_file(self) -> Path:
        return self.workdir / "pids" / f"{Path(self.binary).stem}.pid"

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / f"{Path(self.binary).stem}.log"

    @property
    def health_url(self) -> str:
        path = HEALTH_PATHS.get(self.name, "/healthz")
        return f"{self.metric.get('scheme', 'http')}://{self.metric['host']}{path}"

    @property
    def metrics_url(self) -> str:
        return f"{self.metric.get('scheme', 'http')}://{self.metric['host']}{self.metric.get('path', '/metrics')}"


def _component(spec: dict[str, Any]) -> Component:
    args = tuple(spec.get("args") or ())
    return Component(spec["name"], spec["binary"], args, Path(spec["workDir"]), spec.get("metric") or {})


# How long a signal may take to show in the process's state.
PAUSE_SECONDS = 5.0
STOPPED = frozenset({"T", "t"})  # stopped by a signal, or (the same to us) under a tracer's stop


def process_state(pid: int) -> str:
    """The kernel's one-letter state (R, S, D, T, ...), or "" for no process; a zombie counts as none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    state = stat.rsplit(")", 1)[1].split()[0]
    return "" if state in ("Z", "X") else state


class ControlPlane:
    def __init__(self, name: str | None = None, workdir: Path | None = None) -> None:
        self.name = name or os.environ.get("FTSO_CLUSTER_NAME") or "ftso"
        self.workdir = workdir or cache_dir() / "kwok" / "clusters" / self.name
        self._components: tuple[int, dict[str, Component]] | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str) -> ControlPlane:
        """The cluster a kwokctl kubeconfig points at: its CA lives in <workdir>/pki/ca.crt."""
        config = yaml.safe_load(Path(kubeconfig).read_text())
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        cluster_name = contexts[config["current-context"]]["cluster"]
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == cluster_name)
        ca = Path(cluster.get("certificate-authority") or "")
        if ca.parent.name != "pki" or not (ca.parent.parent / "kwok.yaml").exists():
            raise ValueError(f"{kubeconfig} is not a kwokctl cluster's kubeconfig")
        return cls(ca.parent.parent.name, ca.parent.parent)

    # Processes

    def components(self) -> dict[str, Component]:
        """From kwok.yaml, read again only when a new cluster replaced it."""
        config_file = self.workdir / "kwok.yaml"
        stamp = config_file.stat().st_mtime_ns
        if self._components is None or self._components[0] != stamp:
            config = next(yaml.safe_load_all(config_file.read_text()))
            self._components = (stamp, {c["name"]: _component(c) for c in config["components"]})
        return self._components[1]

    def component(self, name: str) -> Component:
        return self.components()[name]

    def pid(self, name: str) -> int | None:
        """The component's live process (paused counts as live), from kwokctl's pid file."""
        component = self.component(name)
        try:
            pid = int(component.pid_file.read_text().strip())
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, ValueError):
            return None
        # After a reboot the pid may be another process's.
        return pid if process_state(pid) and argv0 == component.binary else None

    def _live_pid(self, name: str) -> int:
        pid = self.pid(name)
        if pid is None:
            raise AssertionError(f"{name} of cluster {self.name} is not running")
        return pid

    def pause(self, name: str) -> None:
        """SIGSTOP, then wait until the kernel shows the process stopped: the signal is delivered
        asynchronously, and a check made in between saw a running process that no longer answered. A
        process that is not stopped after PAUSE_SECONDS (or died) fails the caller: the pause never was."""
        pid = self._live_pid(name)
        os.kill(pid, signal.SIGSTOP)
        state = _wait_state(pid, lambda s: s in STOPPED or not s)
        if state not in STOPPED:
            raise AssertionError(f"{name} (pid {pid}) did not stop after SIGSTOP: state {state or 'gone'!r}")

    def resume(self, name: str) -> None:
        """SIGCONT to a live component, which must then run again (a still-stopped one fails the caller)."""
        pid = self.pid(name)
        if pid is None:
            return
        os.kill(pid, signal.SIGCONT)
        state = _wait_state(pid, lambda s: s not in STOPPED)
        if state in STOPPED:
            raise AssertionError(f"{name} (pid {pid}) is still stopped after SIGCONT")

    def resume_all(self) -> None:
        for name in self.components():
            self.resume(name)

    @contextmanager
    def paused(self, *names: str) -> Iterator[None]:
        for name in names:
            self.pause(name)
        try:
            yield
        finally:
            for name in names:
                self.resume(name)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """The component dies, as in a crash; bringing it back is the supervisor's job. SIGKILL must end
        the process (a zombie counts as ended) within PAUSE_SECONDS, or the caller fails."""
        pid = self._live_pid(name)
        os.kill(pid, sig)
        if sig == signal.SIGKILL and not _gone(pid, PAUSE_SECONDS):
            raise AssertionError(f"{name} (pid {pid}) still runs after SIGKILL")
        return pid

    def restart(self, name: str, *, grace: float = 5.0) -> None:
        """Stop the component (SIGTERM, then SIGKILL after `grace` seconds; 0: SIGKILL at once, as kwokctl
        stops) and start it again with its recorded command line."""
        with self.lock():
            before = self._stop(name, grace)
            self._kwokctl_start()
        after = self.pid(name)
        if after is None or after == before:
            raise AssertionError(f"{name} was not restarted: pid {before} before, {after} after")

    def start(self) -> None:
        """Start whatever component is not running, as kwokctl does."""
        with self.lock():
            self._kwokctl_start()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The supervisor's lock: it leaves the components alone while we hold it."""
        with open(self.workdir / "supervise.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def stopped(self, name: str, *, grace: float = 5.0) -> Iterator[None]:
        """The component is down (connections refused, unlike a pause) inside the block, then started
        again; the supervisor, locked out meanwhile, restarts nothing else either."""
        with self.lock():
            self._stop(name, grace)
            try:
                yield
            finally:
                self._kwokctl_start()

    def _stop(self, name: str, grace: float) -> int | None:
        """Stops the component; returns the pid it had (None: it was not running). One that does not end
        fails the caller: kwokctl would take it for running and start nothing."""
        pid = self.pid(name)
        if pid is not None and grace > 0:
            _signal(pid, signal.SIGTERM)
            _signal(pid, signal.SIGCONT)  # a paused process handles its SIGTERM only once resumed
        if pid is not None and (grace <= 0 or not _gone(pid, grace)):
            _signal(pid, signal.SIGKILL)
            if not _gone(pid, 10.0):
                raise AssertionError(f"{name} (pid {pid}) still runs 10 s after SIGKILL")
        component = self.component(name)
        # kwokctl trusts a pid file whose pid answers signal 0, as a zombie does: it must go.
        component.pid_file.unlink(missing_ok=True)
        keep_log(component)
        return pid

    def _kwokctl_start(self) -> None:
        kwokctl = cache_dir() / "bin" / "kwokctl"
        env = {**os.environ, "KWOK_WORKDIR": str(self.workdir.parent.parent)}
        result = subprocess.run(
            [str(kwokctl), "--name", self.name, "start", "cluster", "--timeout", "60s"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"kwokctl start cluster {self.name} failed: {result.stderr.strip()}")

    def supervisor_pid(self) -> int | None:
        try:
            pid = int((self.workdir / "supervisor.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_state(pid) else None

    # Health

    def component_problem(self, component: Component) -> str:
        """Why the component is not healthy; "" when it is."""
        pid = self.pid(component.name)
        if pid is None:
            return "not running"
        if process_state(pid) == "T":
            return "paused"
        try:
            if _get(component, component.health_url).strip() not in ("ok", '{"health":"true","reason":""}'):
                return "health check failed"
            if component.name in LEADER_ELECTED and not _leads(component):
                return "not the leader"
        except OSError as error:
            return f"health check failed: {error}"
        return ""

    def problems(self) -> dict[str, str]:
        """Every unhealthy component, with why."""
        found = {c.name: self.component_problem(c) for c in self.components().values()}
        return {name: problem for name, problem in found.items() if problem}

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Until every component runs, answers its health check, and leads where it must."""
        deadline = time.monotonic() + timeout
        while problems := self.problems():
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster {self.name} not healthy after {timeout:.0f}s: {problems}")
            time.sleep(0.5)


def keep_log(component: Component) -> None:
    """kwokctl truncates a component's log when it starts it: keep the last run's, as `kubectl logs -p`."""
    if component.log_file.exists():
        component.log_file.replace(component.log_file.with_suffix(".previous.log"))


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # it exited meanwhile
        os.kill(pid, sig)


def _wait_state(pid: int, done: Callable[[str], bool]) -> str:
    """The process's state once `done` holds for it, or the last one seen after PAUSE_SECONDS."""
    deadline = time.monotonic() + PAUSE_SECONDS
    while not done(state := process_state(pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return state


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_state(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _get(component: Component, url: str) -> str:
    context = ssl.create_default_context()
    # kwokctl's components serve self-signed certificates: it skips verification too (insecureSkipVerify).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if component.metric.get("certPath"):
        context.load_cert_chain(component.metric["certPath"], component.metric["keyPath"])
    with urllib.request.urlopen(url, timeout=3, context=context) as response:
        return str(response.read().decode(errors="replace"))


def _leads(component: Component) -> bool:
    wanted = f'leader_election_master_status{{name="{component.name}"}} 1'
    return any(line.strip() == wanted for line in _get(component, component.metrics_url).splitlines())
