"""Schema pieces of the pod template with CEL rules that refuse, at admission, what Pod validation would
refuse later when the operator creates the pods: names and their formats, port names and their uniqueness,
probe and resource shapes, volume and mount references. What the schema does not declare is kept as given
and left to the API server (a refused pod create then shows as ReplicaFailure)."""

from __future__ import annotations

from typing import Any

from ftso.builders import CHECKPOINT_VOLUME, ROLE_VOLUME

Schema = dict[str, Any]
DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PRESERVE = {"x-kubernetes-preserve-unknown-fields": True}
MAX_VOLUMES = 64  # far above real pods; CEL needs a bound to price its rules
MAX_MOUNTS = 32
MAX_RESOURCES = 16


def rule(expression: str, message: str) -> dict[str, str]:
    return {"rule": expression, "message": message}


def _any_object() -> Schema:
    return {"type": "object", **PRESERVE}


def _dns_label(what: str) -> Schema:
    return {
        "type": "string",
        "maxLength": 63,
        "x-kubernetes-validations": [
            rule(
                f"self.matches('{DNS_LABEL}')",
                f"{what} must be a DNS label: lowercase letters, digits and '-', starting and ending "
                "with a letter or digit",
            )
        ],
    }


def port_name() -> Schema:
    # IANA service name, as Pod validation checks it.
    return {
        "type": "string",
        "maxLength": 15,
        "description": "Port name, referable from service.ports[].targetPort.",
        "x-kubernetes-validations": [
            rule(
                f"self.matches('{DNS_LABEL}') && self.matches('[a-z]') && !self.contains('--')",
                "port names must be at most 15 lowercase letters, digits and '-', with at least one "
                "letter, no '--' and no '-' at either end",
            )
        ],
    }


def probe(kind: str) -> Schema:
    handlers = ("exec", "httpGet", "tcpSocket", "grpc")
    rules = [
        rule(
            "[" + ", ".join(f"has(self.{h})" for h in handlers) + "].filter(x, x).size() == 1",
            f"{kind} needs exactly one of exec, httpGet, tcpSocket or grpc",
        )
    ]
    if kind != "readinessProbe":
        rules.append(
            rule(
                "!has(self.successThreshold) || self.successThreshold == 1",
                f"{kind}.successThreshold must be 1",
            )
        )
    properties: Schema = {h: _any_object() for h in handlers}
    for number in ("periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold"):
        properties[number] = {"type": "integer", "minimum": 1}
    properties["initialDelaySeconds"] = {"type": "integer", "minimum": 0}
    return {"type": "object", "properties": properties, "x-kubernetes-validations": rules, **PRESERVE}


def _quantities(what: str) -> Schema:
    return {
        "type": "object",
        "maxProperties": MAX_RESOURCES,
        "additionalProperties": {"x-kubernetes-int-or-string": True, "maxLength": 64},
        "x-kubernetes-validations": [
            rule(
                "self.all(k, isQuantity(string(self[k])))",
                f"resources.{what} values must be quantities such as 500m, 1, 128Mi",
            )
        ],
    }


def resources() -> Schema:
    fits = (
        "!has(self.limits) || !has(self.requests) || self.requests.all(k, !(k in self.limits) || "
        "!isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) || "
        "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)"
    )
    return {
        "type": "object",
        "properties": {"limits": _quantities("limits"), "requests": _quantities("requests")},
        "x-kubernetes-validations": [rule(fits, "resources.requests must not exceed resources.limits")],
        **PRESERVE,
    }


def volume_mounts() -> Schema:
    mount = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 63},
            "mountPath": {"type": "string", "maxLength": 512},
        },
        "required": ["name", "mountPath"],
        **PRESERVE,
    }
    return {
        "type": "array",
        "maxItems": MAX_MOUNTS,
        "items": mount,
        "x-kubernetes-validations": [
            rule(
                "self.all(m, self.filter(n, n.mountPath == m.mountPath).size() == 1)",
                "volumeMounts must have unique mountPaths",
            )
        ],
    }


def volumes() -> Schema:
    volume = {
        "type": "object",
        "properties": {"name": _dns_label("volume names")},
        "required": ["name"],
        **PRESERVE,
    }
    return {
        "type": "array",
        "maxItems": MAX_VOLUMES,
        "items": volume,
        "x-kubernetes-validations": [
            rule(
                "self.all(v, self.filter(w, w.name == v.name).size() == 1)", "volumes must have unique names"
            )
        ],
    }


def container_properties() -> Schema:
    return {
        "name": _dns_label("container names"),
        "imagePullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
        "livenessProbe": probe("livenessProbe"),
        "readinessProbe": probe("readinessProbe"),
        "startupProbe": probe("startupProbe"),
        "resources": resources(),
        "volumeMounts": volume_mounts(),
    }


def pod_spec_rules() -> list[dict[str, str]]:
    """Rules across the pod spec: mounts name declared volumes (or the operator's own)."""
    ours = f"m.name == '{ROLE_VOLUME}' || m.name == '{CHECKPOINT_VOLUME}'"
    return [
        rule(
            "self.containers.all(c, !has(c.volumeMounts) || c.volumeMounts.all(m, "
            f"{ours} || (has(self.volumes) && self.volumes.exists(v, v.name == m.name))))",
            "every volumeMounts[].name must name one of template.spec.volumes",
        )
    ]
