"""One object holds every setting of the operator; `ftso run` fills it from flags."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    kubeconfig: str | None = None
    context: str | None = None
    workers: int = 16
    # A periodic look at every resource, in case an event was missed: cheap, it reads only the cache.
    resync_seconds: float = 60.0
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    metrics_port: int | None = None
    # With a namespace, replicas elect one leader through a Lease there; without, this process acts alone.
    leader_election_namespace: str | None = None
    leader_election_name: str = "ftso-operator"
    lease_seconds: float = 4.0
    verbose: bool = False
    extra: dict[str, str] = field(default_factory=dict)
