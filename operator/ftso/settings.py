"""One object holds every setting of the operator, and its defaults: `ftso run`'s flags default to them."""

from __future__ import annotations

import math
from dataclasses import dataclass

# A relist costs the API server and us in proportion to what it lists: a bigger view is relisted less often,
# one resync period more per this many objects, up to RELIST_MAX_PERIODS periods. Its resources are still
# looked at every period, from the view.
RELIST_OBJECTS_PER_PERIOD = 2000
RELIST_MAX_PERIODS = 6


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    kubeconfig: str | None = None
    context: str | None = None
    workers: int = 16
    # A periodic authoritative relist (paged) of everything the operator watches, then a look at every
    # resource: objects that vanished while a watch was down are dropped, a view gone back is reset.
    resync_seconds: float = 20.0
    # More than this share of nodes looking lost at once holds node loss: that says more about the operator's
    # view (a partition, a paused API server, a stalled watch) than about the nodes, as Kubernetes' node
    # lifecycle controller stops evicting in a full disruption.
    max_lost_node_share: float = 0.5
    # No Lease renewal of any node seen for this long: the heartbeat watch is suspect and restarted.
    heartbeat_silence_seconds: float = 15.0
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    # Liveness fails when a queued key waited this long while no reconcile ended, or one ran this long.
    stuck_after_seconds: float = 300.0
    metrics_port: int | None = None
    # With a namespace, replicas elect one leader through a Lease there; without, this process acts alone.
    leader_election_namespace: str | None = None
    leader_election_name: str = "ftso-operator"
    lease_seconds: float = 4.0
    verbose: bool = False

    def relist_seconds(self, view_size: int) -> float:
        """How often a view of `view_size` objects is relisted from the API."""
        periods = min(RELIST_MAX_PERIODS, max(1, math.ceil(view_size / RELIST_OBJECTS_PER_PERIOD)))
        return self.resync_seconds * periods
