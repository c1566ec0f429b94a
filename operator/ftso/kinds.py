"""The kinds the operator reads and writes, declared once. Owned kinds carry the `ftso.dev/service` label:
they are watched and listed with that selector and kept per owner in the store."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from ftso import names


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str  # "" for the core API
    version: str
    plural: str
    owned: bool = False

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        path = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if namespace is not None:
            path += f"/namespaces/{quote(namespace)}"
        path += f"/{self.plural}"
        if name is not None:
            path += f"/{quote(name)}"
        return path


FTS = Kind(names.KIND, names.GROUP, names.VERSION, names.PLURAL)
POD = Kind("Pod", "", "v1", "pods", owned=True)
SERVICE = Kind("Service", "", "v1", "services", owned=True)
PDB = Kind("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets", owned=True)
ENDPOINT_SLICE = Kind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", owned=True)
JOB = Kind("Job", "batch", "v1", "jobs", owned=True)
NODE = Kind("Node", "", "v1", "nodes")
LEASE = Kind("Lease", "coordination.k8s.io", "v1", "leases")
EVENT = Kind("Event", "", "v1", "events")
ENDPOINTS = Kind("Endpoints", "", "v1", "endpoints")  # only deleted: what an older version's selector left
# spec.traffic's objects: not watched, since their CRDs may be missing or come later; read when a resource
# that names a Gateway is reconciled (controller.TrafficLookup).
GATEWAY = Kind("Gateway", names.GATEWAY_GROUP, "v1", "gateways")
HTTP_ROUTE = Kind("HTTPRoute", names.GATEWAY_GROUP, "v1", "httproutes")
BACKEND_TRAFFIC_POLICY = Kind(
    "BackendTrafficPolicy", "gateway.envoyproxy.io", "v1alpha1", "backendtrafficpolicies"
)
DESTINATION_RULE = Kind("DestinationRule", "networking.istio.io", "v1", "destinationrules")
# The object that carries a provider's balancing algorithm.
PROVIDER_POLICY = {
    names.PROVIDER_ENVOY_GATEWAY: BACKEND_TRAFFIC_POLICY,
    names.PROVIDER_ISTIO: DESTINATION_RULE,
}
TRAFFIC = (GATEWAY, HTTP_ROUTE, BACKEND_TRAFFIC_POLICY, DESTINATION_RULE)

OWNED = (POD, SERVICE, PDB, ENDPOINT_SLICE, JOB)
BY_KIND = {k.kind: k for k in (FTS, *OWNED, NODE, LEASE, EVENT, ENDPOINTS, *TRAFFIC)}
