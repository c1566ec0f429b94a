"""spec.traffic: weights, the pods' Services, the HTTPRoute, the provider's object and TrafficPolicyReady."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from ftso import controller as controller_module
from ftso import kinds, names
from ftso.api.spec import operator_judged_problems, parse_spec
from ftso.client import ApiError
from ftso.controller import TRAFFIC_REFRESH_SECONDS, Controller, TrafficLookup
from ftso.model import format_time
from ftso.plan import Plan
from ftso.reconcile import Observed, decide
from ftso.store import Store
from ftso.traffic import TrafficView, covers
from ftso.usage import PodUsage

from .factories import NOW, UID, node, observed, pod, raw_spec
from .test_controller import FakeClient

GATEWAY_API = frozenset({"Gateway", "HTTPRoute"})
ENVOY = GATEWAY_API | {"BackendTrafficPolicy"}
ISTIO = GATEWAY_API | {"DestinationRule"}
READY_GATEWAY = TrafficView(served=GATEWAY_API, gateway_found=True)


def _spec(**traffic: Any) -> dict[str, Any]:
    return raw_spec(traffic={"gatewayRef": {"name": "web"}, **traffic})


def _pods(**replica_one: Any) -> list[dict[str, Any]]:
    pods = [pod(0, role="primary"), pod(1, **replica_one), pod(2)]
    for ordinal, body in enumerate(pods):
        body["status"]["podIP"] = f"10.0.0.{ordinal + 1}"
    return pods


def _healthy_status(since: str = "2026-11-26T11:00:00Z") -> dict[str, Any]:
    pods = [{"name": f"demo-{i}", "health": "Healthy", "since": since} for i in range(3)]
    return {"primary": "demo-0", "term": 1, "pods": pods}


def _decide(
    spec: dict[str, Any],
    *,
    pods: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
    view: TrafficView | None = READY_GATEWAY,
    services: dict[str, Any] | None = None,
) -> Plan:
    seen: Observed = observed(
        pods if pods is not None else _pods(),
        spec=spec,
        status=status or _healthy_status(),
        services=services,
    )
    return decide(Observed(**{**seen.__dict__, "traffic": view}))


def _route(plan: Plan) -> dict[str, Any]:
    return next(o for o in plan.traffic_applies if o["kind"] == "HTTPRoute")


def _weights(plan: Plan) -> dict[str, int]:
    backends = _route(plan)["spec"]["rules"][0]["backendRefs"]
    return {b["name"]: b["weight"] for b in backends}


def _condition(plan: Plan) -> dict[str, Any]:
    return next(c for c in plan.status["conditions"] if c["type"] == names.ConditionType.TRAFFIC_POLICY_READY)


def test_by_default_the_plain_services_route_and_nothing_else_is_written() -> None:
    plan = _decide(raw_spec(), view=None)
    ready = _condition(plan)
    assert ready["status"] == "True" and ready["reason"] == names.Reason.KUBE_PROXY
    assert plan.traffic_applies == [] and plan.traffic_deletes == []
    assert all(s["spec"]["sessionAffinity"] == "None" for s in plan.owned_creates if s["kind"] == "Service")


def test_session_affinity_and_distribution_go_on_the_plain_services_and_come_off_again() -> None:
    spec = raw_spec(
        traffic={"sessionAffinity": {"clientIPTimeoutSeconds": 600}, "distribution": "PreferSameZone"}
    )
    services = [s for s in _decide(spec, view=None).owned_creates if s["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"demo", "demo-primary", "demo-replicas"}
    for service in services:
        assert service["spec"]["sessionAffinity"] == "ClientIP"
        assert service["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 600}}
        assert service["spec"]["trafficDistribution"] == "PreferSameZone"
    dropped = _decide(raw_spec(), view=None, services={s["metadata"]["name"]: s for s in services})
    patches = {r.name: r.patch for r in dropped.metadata_removals}
    assert patches["demo"] == {
        "spec": {"sessionAffinity": "None", "sessionAffinityConfig": None, "trafficDistribution": None}
    }


def test_weighted_routes_to_each_pods_own_service_by_role() -> None:
    plan = _decide(_spec(policy="Weighted", weights={"primary": 300, "replica": 100}))
    pod_services = {
        s["metadata"]["name"]: s
        for s in plan.owned_creates
        if names.LABEL_ORDINAL in s["spec"].get("selector", {})
    }
    assert set(pod_services) == {"demo-0", "demo-1", "demo-2"}
    assert pod_services["demo-1"]["spec"]["selector"] == {
        names.LABEL_SERVICE: "demo",
        names.LABEL_ORDINAL: "1",
    }
    assert _weights(plan) == {"demo-0": 300, "demo-1": 100, "demo-2": 100}
    route = _route(plan)
    assert route["spec"]["parentRefs"] == [{"group": names.GATEWAY_GROUP, "kind": "Gateway", "name": "web"}]
    assert all(b["port"] == 8080 for b in route["spec"]["rules"][0]["backendRefs"])
    assert [p["weight"] for p in plan.status["pods"]] == [300, 100, 100]


def test_a_pods_annotation_replaces_its_roles_weight() -> None:
    pods = _pods()
    pods[2]["metadata"]["annotations"][names.ANNOTATION_WEIGHT] = "7"
    pods[1]["metadata"]["annotations"][names.ANNOTATION_WEIGHT] = "lots"  # not a number: the role's
    assert _weights(_decide(_spec(policy="Weighted"), pods=pods)) == {
        "demo-0": 100,
        "demo-1": 100,
        "demo-2": 7,
    }


def test_a_degraded_pod_is_drained_to_weight_zero_while_its_service_keeps_it() -> None:
    plan = _decide(
        _spec(policy="Weighted"), pods=_pods(ready=False, ready_changed=NOW - timedelta(seconds=3))
    )
    assert plan.status["pods"][1]["health"] == names.Health.DEGRADED
    assert _weights(plan)["demo-1"] == 0
    service = next(s for s in plan.owned_creates if s["metadata"]["name"] == "demo-1")
    assert names.LABEL_SERVING not in service["spec"]["selector"]


def test_a_failover_moves_the_primarys_weight_in_the_same_reconcile() -> None:
    pods = _pods()
    pods[0]["metadata"]["deletionTimestamp"] = format_time(NOW)
    plan = _decide(_spec(policy="Weighted", weights={"primary": 500, "replica": 100}), pods=pods)
    new_primary = plan.status["primary"]
    assert new_primary != "demo-0"
    assert _weights(plan)[new_primary] == 500 and _weights(plan)["demo-0"] == 0


def test_slow_start_ramps_a_pod_up_in_steps_and_asks_to_look_again_at_the_next() -> None:
    status = _healthy_status()
    status["pods"][2]["since"] = format_time(NOW - timedelta(seconds=25))
    spec = _spec(policy="Weighted", weights={"slowStartSeconds": 100})
    plan = _decide(spec, status=status)
    assert _weights(plan) == {"demo-0": 100, "demo-1": 100, "demo-2": 30}
    assert plan.requeue_after is not None and 4.9 < plan.requeue_after <= 5.2
    status["pods"][2]["since"] = format_time(NOW - timedelta(seconds=100))
    assert _weights(_decide(spec, status=status))["demo-2"] == 100


def test_a_pod_that_only_now_turns_healthy_starts_at_the_first_step() -> None:
    status = _healthy_status()
    status["pods"][1]["health"] = "Starting"
    plan = _decide(_spec(policy="Weighted", weights={"slowStartSeconds": 60}), status=status)
    assert _weights(plan)["demo-1"] == 10


def test_an_unchanged_route_is_not_written_again() -> None:
    first = _decide(_spec(policy="Weighted"))
    route = _route(first)
    served = {**route, "metadata": {**route["metadata"], "uid": "r"}, "status": {"parents": []}}
    again = _decide(_spec(policy="Weighted"), view=TrafficView(GATEWAY_API, True, served))
    assert again.traffic_applies == []


def test_round_robin_is_carried_by_the_installed_providers_object() -> None:
    envoy = _decide(_spec(policy="RoundRobin"), view=TrafficView(ENVOY, True))
    policy = next(o for o in envoy.traffic_applies if o["kind"] == "BackendTrafficPolicy")
    assert policy["spec"]["loadBalancer"] == {"type": "RoundRobin"}
    assert policy["spec"]["targetRefs"] == [
        {"group": names.GATEWAY_GROUP, "kind": "HTTPRoute", "name": "demo"}
    ]
    assert _weights(envoy) == {"demo": 1}  # one backend, the Service of every serving pod
    istio = _decide(_spec(policy="Random"), view=TrafficView(ISTIO, True))
    rule = next(o for o in istio.traffic_applies if o["kind"] == "DestinationRule")
    assert rule["spec"] == {
        "host": "demo.ns.svc.cluster.local",
        "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
    }


def test_without_a_provider_round_robin_is_not_ready_but_the_route_is_written() -> None:
    plan = _decide(_spec(policy="RoundRobin"))
    assert _condition(plan)["reason"] == names.Reason.PROVIDER_MISSING
    assert [o["kind"] for o in plan.traffic_applies] == ["HTTPRoute"]
    named = _decide(_spec(policy="RoundRobin", provider="EnvoyGateway"))
    assert "BackendTrafficPolicy CRD" in _condition(named)["message"]


def test_without_the_gateway_api_nothing_is_written_and_one_event_says_why() -> None:
    plan = _decide(_spec(policy="Weighted"), view=TrafficView(served=frozenset()))
    ready = _condition(plan)
    assert (ready["status"], ready["reason"]) == ("False", names.Reason.GATEWAY_API_MISSING)
    assert plan.traffic_applies == []
    assert [e.reason for e in plan.events] == [names.EventReason.TRAFFIC_POLICY_NOT_READY]
    again = _decide(
        _spec(policy="Weighted"),
        view=TrafficView(served=frozenset()),
        status={**_healthy_status(), "conditions": plan.status["conditions"]},
    )
    assert again.events == []


def test_a_missing_gateway_is_said_and_the_route_waits_for_it() -> None:
    plan = _decide(
        _spec(policy="Weighted", gatewayRef={"name": "web", "namespace": "edge"}),
        view=TrafficView(GATEWAY_API),
    )
    assert _condition(plan)["reason"] == names.Reason.GATEWAY_NOT_FOUND
    assert "edge/web" in _condition(plan)["message"]
    assert _route(plan)["spec"]["parentRefs"][0]["namespace"] == "edge"


def _route_with_parent(status: str, reason: str) -> dict[str, Any]:
    condition = {"type": "Accepted", "status": status, "reason": reason, "message": "listener says so"}
    parent = {"parentRef": {"name": "web"}, "controllerName": "example.com/gw", "conditions": [condition]}
    return {"metadata": {"labels": {}}, "spec": {}, "status": {"parents": [parent]}}


def test_the_condition_follows_what_the_gateway_controller_says_of_the_route() -> None:
    accepted = _decide(_spec(), view=TrafficView(ISTIO, True, _route_with_parent("True", "Accepted")))
    assert (_condition(accepted)["status"], _condition(accepted)["reason"]) == (
        "True",
        names.Reason.ROUTE_ACCEPTED,
    )
    refused = _decide(
        _spec(), view=TrafficView(ISTIO, True, _route_with_parent("False", "NotAllowedByListeners"))
    )
    assert _condition(refused)["reason"] == names.Reason.ROUTE_NOT_ACCEPTED
    assert "NotAllowedByListeners" in _condition(refused)["message"]
    pending = _decide(_spec(), view=TrafficView(ISTIO, True, {"metadata": {}, "spec": {}}))
    assert _condition(pending)["reason"] == names.Reason.ROUTE_PENDING


def test_dropping_the_gateway_deletes_the_route_and_the_providers_object() -> None:
    view = TrafficView(ENVOY, True, {"metadata": {}}, {"BackendTrafficPolicy": {"metadata": {}}})
    plan = _decide(raw_spec(), view=view)
    assert sorted(plan.traffic_deletes) == [("BackendTrafficPolicy", "demo"), ("HTTPRoute", "demo")]
    assert _condition(plan)["reason"] == names.Reason.KUBE_PROXY


def test_scale_down_deletes_the_service_of_a_pod_no_longer_in_range() -> None:
    first = _decide(_spec(policy="Weighted"))
    services = {s["metadata"]["name"]: s for s in first.owned_creates if s["kind"] == "Service"}
    plan = _decide({**_spec(policy="Weighted"), "replicas": 2}, pods=_pods()[:2], services=services)
    assert ("Service", "demo-2") in plan.owned_deletes


def test_a_refused_lookup_is_said_and_nothing_is_written() -> None:
    plan = _decide(_spec(policy="Weighted"), view=TrafficView(problem="403 Forbidden: no"))
    assert _condition(plan)["reason"] == names.Reason.TRAFFIC_API_ERROR
    assert plan.traffic_applies == []


def test_weighted_allows_no_more_replicas_than_a_rule_has_backends() -> None:
    problems = operator_judged_problems(parse_spec({**_spec(policy="Weighted"), "replicas": 17}))
    assert any("at most 16 replicas" in p for p in problems)
    assert not operator_judged_problems(parse_spec({**_spec(policy="Random"), "replicas": 17}))


def test_covers_ignores_what_the_server_added() -> None:
    assert covers({"a": 1, "b": [{"c": 2, "d": 3}]}, {"b": [{"c": 2}]})
    assert not covers({"b": [{"c": 2}, {"c": 3}]}, {"b": [{"c": 2}]})
    assert not covers({"a": 1}, {"a": 2})


class FakeTrafficApi:
    """Discovery and GETs of the traffic kinds: what is installed and what exists, by path."""

    def __init__(
        self, installed: dict[str, list[str]], objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        self.installed = installed  # group/version -> plurals
        self.objects = objects  # (kind, name) -> body
        self.requests = 0
        self.refuse_apply: ApiError | None = None
        self.refuse_reads: ApiError | None = None

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.requests += 1
        if self.refuse_reads is not None:
            raise self.refuse_reads
        group_version = "/".join(path.removeprefix("/apis/").split("/")[:2])
        if group_version not in self.installed:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if "/namespaces/" not in path:
            return {"resources": [{"name": plural} for plural in self.installed[group_version]]}
        plural, name = path.split("/")[-2:]
        kind = next(k.kind for k in kinds.TRAFFIC if k.plural == plural)
        if (kind, name) not in self.objects:
            raise ApiError(404, "NotFound", f"{kind} {name} not found")
        return self.objects[(kind, name)]

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        self.requests += 1
        if (kind, name) not in self.objects:
            raise ApiError(404, "NotFound", f"{kind} {name} not found")
        return self.objects[(kind, name)]

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.refuse_apply is not None:
            raise self.refuse_apply
        self.objects[(body["kind"], body["metadata"]["name"])] = body
        return body


def _lookup(api: FakeTrafficApi) -> tuple[TrafficLookup, list[float]]:
    now = [0.0]
    return TrafficLookup(api, clock=lambda: now[0]), now  # type: ignore[arg-type]


def _looked_up(
    lookup: TrafficLookup,
    spec: dict[str, Any],
    status: dict[str, Any],
    key: tuple[str, str] = ("ns", "demo"),
    uid: str = "uid-demo",
) -> TrafficView | None:
    """The view once the read it starts, when one is due, has landed."""

    async def settled() -> TrafficView | None:
        lookup.view(key, spec, status, uid=uid)
        await asyncio.gather(*lookup._reading.values())
        return lookup.view(key, spec, status, uid=uid)

    return asyncio.run(settled())


def test_the_lookup_reads_only_for_a_named_gateway_and_at_most_every_refresh() -> None:
    ours = {"metadata": {"ownerReferences": [{"kind": names.KIND, "name": "demo", "uid": "uid-demo"}]}}
    api = FakeTrafficApi(
        {"gateway.networking.k8s.io/v1": ["gateways", "httproutes"]},
        {("Gateway", "web"): {}, ("HTTPRoute", "demo"): ours},
    )
    lookup, now = _lookup(api)
    assert _looked_up(lookup, raw_spec(), {}) is None and api.requests == 0
    view = _looked_up(lookup, _spec(), {})
    assert view is not None and view.served == GATEWAY_API and view.gateway_found and view.route == ours
    asked = api.requests
    _looked_up(lookup, _spec(), {})
    assert api.requests == asked  # cached
    now[0] += TRAFFIC_REFRESH_SECONDS
    _looked_up(lookup, _spec(), {})
    assert api.requests > asked


def test_a_route_someone_else_owns_is_not_ours() -> None:
    api = FakeTrafficApi(
        {"gateway.networking.k8s.io/v1": ["httproutes"]}, {("HTTPRoute", "demo"): {"metadata": {}}}
    )
    view = _looked_up(_lookup(api)[0], _spec(), {})
    assert view is not None and view.route is None and view.foreign == {"HTTPRoute"}
    plan = _decide(_spec(policy="Weighted"), view=view)
    assert plan.traffic_applies == [] and plan.traffic_deletes == []
    assert _condition(plan)["reason"] == names.Reason.NAME_TAKEN


def test_a_leftover_route_is_looked_up_until_the_status_says_the_plain_services_route() -> None:
    api = FakeTrafficApi({}, {})
    lookup = _lookup(api)[0]
    left = {"conditions": [{"type": "TrafficPolicyReady", "reason": names.Reason.ROUTE_ACCEPTED}]}
    assert _looked_up(lookup, raw_spec(), left) is not None
    done = {"conditions": [{"type": "TrafficPolicyReady", "reason": names.Reason.KUBE_PROXY}]}
    assert _looked_up(lookup, raw_spec(), done) is None


def test_a_refused_write_shows_in_the_next_view() -> None:
    api = FakeTrafficApi(
        {"gateway.networking.k8s.io/v1": ["gateways", "httproutes"]}, {("Gateway", "web"): {}}
    )
    store = Store()
    controller = Controller(api, store)  # type: ignore[arg-type]
    key = ("ns", "demo")
    _looked_up(controller.traffic, _spec(), {})
    api.refuse_apply = ApiError(403, "Forbidden", "httproutes is forbidden")
    plan = Plan(status={}, traffic_applies=[{"kind": "HTTPRoute", "metadata": {"name": "demo"}}])  # type: ignore[typeddict-item]
    asyncio.run(controller._update_traffic(key, plan))
    view = _looked_up(controller.traffic, _spec(), {})
    assert view is not None and "403 Forbidden" in view.problem
    assert controller.traffic.retry_after(key) == TRAFFIC_REFRESH_SECONDS


def _loaded(cpu: dict[str, float], at: datetime) -> dict[str, PodUsage]:
    return {name: PodUsage(cores, 0, at) for name, cores in cpu.items()}


def _follow(
    cpu: dict[str, float], status: dict[str, Any], at: datetime = NOW, **follow: Any
) -> tuple[Plan, dict[str, Any]]:
    spec = _spec(policy="Weighted", weights={"followLoad": {"cpuCapacity": "1", **follow}})
    seen = observed(_pods(), spec=spec, status=status)
    plan = decide(Observed(**{**seen.__dict__, "traffic": READY_GATEWAY, "usage": _loaded(cpu, at)}))
    return plan, {**status, "pods": plan.status["pods"]}


def test_load_following_weights_step_toward_the_idle_share_and_hold_without_new_samples() -> None:
    busy = {"demo-0": 0.1, "demo-1": 0.4, "demo-2": 0.95}  # targets 90, 60 and the floor, 10
    plan, status = _follow(busy, _healthy_status())
    assert _weights(plan) == {"demo-0": 90, "demo-1": 80, "demo-2": 80}  # at most 20 a sample
    again, status = _follow(busy, status)
    assert _weights(again) == _weights(plan)  # the same sample moves nothing
    timeline = []
    for tick in range(1, 5):
        plan, status = _follow(busy, status, at=NOW + timedelta(seconds=10 * tick))
        timeline.append([p["weight"] for p in plan.status["pods"]])
    assert timeline == [[90, 60, 60], [90, 60, 40], [90, 60, 20], [90, 60, 10]]


def test_a_load_change_inside_the_deadband_moves_nothing() -> None:
    plan, status = _follow({"demo-0": 0.1, "demo-1": 0.1, "demo-2": 0.1}, _healthy_status())
    assert _weights(plan) == {"demo-0": 90, "demo-1": 90, "demo-2": 90}
    wobble = {"demo-0": 0.14, "demo-1": 0.07, "demo-2": 0.1}
    plan, _ = _follow(wobble, status, at=NOW + timedelta(seconds=10))
    assert [p["weight"] for p in plan.status["pods"]] == [90, 90, 90]


def test_without_fresh_samples_load_weights_stay_where_they_were() -> None:
    status = _healthy_status()
    for entry, weight in zip(status["pods"], (90, 60, 30), strict=True):
        entry["weight"] = weight
    plan, _ = _follow({"demo-0": 0.9}, status, at=NOW - timedelta(minutes=5))
    assert _weights(plan) == {"demo-0": 90, "demo-1": 60, "demo-2": 30}


# A failing Gateway API never delays or stops a failover: it is read in the background, and what went wrong
# is TrafficPolicyReady=False.

KEY = ("ns", "svc0")
SERVICE_UNAVAILABLE = ApiError(503, "ServiceUnavailable", "the server is currently unable to handle it")
CONNECTION_REFUSED = ApiError(0, "ConnectionError", "Cannot connect to host: Connection refused")


class FailingGatewayApi(FakeClient):
    """Writes answered as the API server would. Reads (discovery and GETs, the Gateway API's only traffic)
    hang when `answer` is None, else fail with it; with `working` they are answered by it instead, and
    the route's and the provider's writes fail (or hang) as `answer` says."""

    def __init__(self, store: Store, answer: ApiError | None, working: FakeTrafficApi | None = None) -> None:
        super().__init__(store)
        self.answer = answer
        self.working = working
        self.reads = 0

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        self.reads += 1
        if self.working is not None:
            return await self.working.request(method, path, **kw)
        return await self._fail()

    async def _fail(self) -> dict[str, Any]:
        if self.answer is None:
            await asyncio.Event().wait()  # never answers
        assert self.answer is not None
        raise self.answer

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        return await self.request("GET", kinds.BY_KIND[kind].path(namespace, name))

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.working is not None and any(body["kind"] == k.kind for k in kinds.TRAFFIC):
            self.calls.append(("APPLY", body["kind"], body["metadata"]["name"]))
            return await self._fail()
        return await super().apply(body)


def _failing_primary(traffic: dict[str, Any] | None = None) -> Store:
    """svc0 routes through the Gateway web; its primary svc0-1 has failed."""
    store = Store()
    for n in ("node-0", "node-1", "node-2"):
        store.put_node(node(n))
    store.put_resource(
        {
            "metadata": {"name": "svc0", "namespace": "ns", "uid": UID, "resourceVersion": "1"},
            "spec": raw_spec(traffic=traffic or {"gatewayRef": {"name": "web"}}),
            "status": {"primary": "svc0-1", "term": 1},
        }
    )
    for ordinal in range(3):
        role = "primary" if ordinal == 1 else "replica"
        body = pod(ordinal, name="svc0", node_name=f"node-{ordinal}", role=role)
        body["status"]["podIP"] = f"10.0.0.{ordinal + 1}"
        store.put_pod(body)
    store.pods[KEY]["svc0-1"]["status"]["phase"] = "Failed"
    return store


def _controller(
    store: Store, answer: ApiError | None, working: FakeTrafficApi | None = None
) -> tuple[Controller, FailingGatewayApi]:
    client = FailingGatewayApi(store, answer, working)
    return Controller(client, store, clock=lambda: NOW), client  # type: ignore[arg-type]


def _ready_condition(store: Store) -> dict[str, Any]:
    conditions = store.resources[KEY]["status"].get("conditions") or []
    return next(c for c in conditions if c["type"] == names.ConditionType.TRAFFIC_POLICY_READY)


@pytest.mark.parametrize(
    "answer", [None, SERVICE_UNAVAILABLE, CONNECTION_REFUSED], ids=["hangs", "503", "down"]
)
def test_a_failing_gateway_api_neither_delays_nor_stops_a_failover(
    answer: ApiError | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controller_module, "TRAFFIC_READ_TIMEOUT_SECONDS", 0.2, raising=False)
    store = _failing_primary({"gatewayRef": {"name": "web"}, "policy": "Weighted"})
    controller, client = _controller(store, answer)
    queued: list[tuple[str, str]] = []
    controller.traffic.on_news = queued.append

    async def scenario() -> float:
        started = time.monotonic()
        await asyncio.wait_for(controller.reconcile(KEY), 2.0)
        took = time.monotonic() - started
        status = store.resources[KEY]["status"]
        assert status["primary"] in ("svc0-0", "svc0-2") and status["term"] == 2
        assert store.pods[KEY][status["primary"]]["metadata"]["labels"][names.LABEL_ROLE] == "primary"
        assert names.EventReason.FAILOVER_STARTED in {e["reason"] for e in client.events}
        await asyncio.sleep(0.5)  # the background read times out or fails, and queues the resource
        assert queued == [KEY] and client.reads >= 1
        await asyncio.wait_for(controller.reconcile(KEY), 2.0)
        return took

    assert asyncio.run(scenario()) < 0.5
    ready = _ready_condition(store)
    assert (ready["status"], ready["reason"]) == ("False", names.Reason.TRAFFIC_API_ERROR)
    expected = "timed out" if answer is None else f"{answer.status} {answer.reason}"
    assert expected in ready["message"]


@pytest.mark.parametrize("answer", [None, SERVICE_UNAVAILABLE], ids=["hangs", "503"])
def test_a_failing_route_write_comes_after_the_failover_and_ends_nothing_else(
    answer: ApiError | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controller_module, "TRAFFIC_WRITE_TIMEOUT_SECONDS", 0.2, raising=False)
    store = _failing_primary({"gatewayRef": {"name": "web"}, "policy": "Weighted"})
    working = FakeTrafficApi(
        {"gateway.networking.k8s.io/v1": ["gateways", "httproutes"]}, {("Gateway", "web"): {}}
    )
    controller, client = _controller(store, answer, working)

    async def scenario() -> float | None:
        uid = store.resources[KEY]["metadata"]["uid"]
        controller.traffic.view(KEY, store.resources[KEY]["spec"], {}, uid=uid)
        await asyncio.gather(*controller.traffic._reading.values())  # the Gateway API reads fine
        return await asyncio.wait_for(controller.reconcile(KEY), 2.0)

    requeue = asyncio.run(scenario())
    uid = store.resources[KEY]["metadata"]["uid"]
    status = store.resources[KEY]["status"]
    assert status["primary"] in ("svc0-0", "svc0-2") and status["term"] == 2
    writes = [(verb, kind) for verb, kind, _ in client.calls]
    assert writes.index(("APPLY", "HTTPRoute")) > writes.index(("PATCH", "FaultTolerantService/status"))
    assert writes.index(("APPLY", "HTTPRoute")) > writes.index(("PATCH", "Pod"))
    assert names.EventReason.FAILOVER_STARTED in {e["reason"] for e in client.events}, "the Events still go"
    view = controller.traffic.view(KEY, store.resources[KEY]["spec"], status, uid=uid)
    assert view is not None and view.problem != ""
    assert requeue is not None and requeue <= TRAFFIC_REFRESH_SECONDS, "the write is tried again"


def test_a_failed_read_keeps_the_last_good_view_and_says_so() -> None:
    ours = {"metadata": {"ownerReferences": [{"kind": names.KIND, "name": "demo", "uid": "uid-demo"}]}}
    api = FakeTrafficApi(
        {"gateway.networking.k8s.io/v1": ["gateways", "httproutes"]},
        {("Gateway", "web"): {}, ("HTTPRoute", "demo"): ours},
    )
    lookup, now = _lookup(api)
    good = _looked_up(lookup, _spec(), {})
    assert good is not None and good.route == ours and not good.stale
    api.refuse_reads = SERVICE_UNAVAILABLE
    now[0] += TRAFFIC_REFRESH_SECONDS
    kept = _looked_up(lookup, _spec(), {})
    assert kept is not None and kept.route == ours and "503 ServiceUnavailable" in kept.stale
    assert lookup.retry_after(("ns", "demo")) == TRAFFIC_REFRESH_SECONDS
    plan = _decide(_spec(policy="Weighted"), view=kept)
    assert _condition(plan)["reason"] == names.Reason.TRAFFIC_API_ERROR
    assert "503 ServiceUnavailable" in _condition(plan)["message"]
    assert [o["kind"] for o in plan.traffic_applies] == ["HTTPRoute"], "the weights still move"
    api.refuse_reads = None
    now[0] += TRAFFIC_REFRESH_SECONDS
    again = _looked_up(lookup, _spec(), {})
    assert again is not None and not again.stale and lookup.retry_after(("ns", "demo")) is None


def test_before_the_first_read_the_condition_stays_as_it_was_and_no_event_is_posted() -> None:
    accepted = {
        "type": "TrafficPolicyReady",
        "status": "True",
        "reason": names.Reason.ROUTE_ACCEPTED,
        "message": "accepted by example.com/gw",
        "lastTransitionTime": "2026-11-26T11:00:00Z",
    }
    restarted = _decide(
        _spec(policy="Weighted"),
        view=TrafficView(pending=True),
        status={**_healthy_status(), "conditions": [accepted]},
    )
    assert {k: v for k, v in _condition(restarted).items() if k != "observedGeneration"} == accepted
    assert restarted.traffic_applies == [] and restarted.traffic_deletes == [] and restarted.events == []
    fresh = _decide(_spec(policy="Weighted"), view=TrafficView(pending=True))
    assert _condition(fresh)["reason"] == names.Reason.TRAFFIC_LOOKUP_PENDING and fresh.events == []
    found = _decide(
        _spec(policy="Weighted"),
        view=TrafficView(served=frozenset()),
        status={**_healthy_status(), "conditions": fresh.status["conditions"]},
    )
    assert [e.reason for e in found.events] == [names.EventReason.TRAFFIC_POLICY_NOT_READY]


def test_a_leftover_route_is_not_forgotten_while_its_first_read_is_under_way() -> None:
    left = {"type": "TrafficPolicyReady", "status": "True", "reason": names.Reason.ROUTE_ACCEPTED}
    plan = _decide(
        raw_spec(), view=TrafficView(pending=True), status={**_healthy_status(), "conditions": [left]}
    )
    assert _condition(plan)["reason"] == names.Reason.ROUTE_ACCEPTED, (
        "not KubeProxy: the route is still there"
    )


def test_a_read_that_lands_queues_the_resource_once() -> None:
    api = FakeTrafficApi(
        {"gateway.networking.k8s.io/v1": ["gateways", "httproutes"]}, {("Gateway", "web"): {}}
    )
    lookup, now = _lookup(api)
    queued: list[tuple[str, str]] = []
    lookup.on_news = queued.append
    assert _looked_up(lookup, _spec(), {}) is not None and queued == [("ns", "demo")]
    now[0] += TRAFFIC_REFRESH_SECONDS
    _looked_up(lookup, _spec(), {})
    assert queued == [("ns", "demo")], "the same view again is no news"


def test_a_hostile_discovery_answer_is_a_problem_not_a_dead_reader() -> None:
    api = FakeTrafficApi({"gateway.networking.k8s.io/v1": ["gateways", "httproutes"]}, {})

    async def hostile(method: str, path: str, **_: Any) -> Any:
        return {"resources": ["not an object"]}

    api.request = hostile  # type: ignore[method-assign]
    view = _looked_up(_lookup(api)[0], _spec(), {})
    assert view is not None and "unreadable" in view.problem
