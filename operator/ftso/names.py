"""Public names that users, their scripts and the tests rely on: the API, labels, annotations, Services."""

from typing import Final

GROUP: Final = "ftso.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "FaultTolerantService"
PLURAL: Final = "faulttolerantservices"
SINGULAR: Final = "faulttolerantservice"
SHORT_NAME: Final = "fts"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

PREFIX: Final = "ftso.dev/"
LABEL_SERVICE: Final = PREFIX + "service"
LABEL_ROLE: Final = PREFIX + "role"
LABEL_SERVING: Final = PREFIX + "serving"
LABEL_ORDINAL: Final = PREFIX + "ordinal"
ANNOTATION_TERM: Final = PREFIX + "term"
ANNOTATION_TEMPLATE_HASH: Final = PREFIX + "template-hash"

ROLE_PRIMARY: Final = "primary"
ROLE_REPLICA: Final = "replica"
ROLE_FENCED: Final = "fenced"

MODE_PRIMARY_REPLICA: Final = "PrimaryReplica"
MODE_ACTIVE_ACTIVE: Final = "ActiveActive"

FIELD_MANAGER: Final = "ftso"
COMPONENT: Final = "ftso-operator"


def service_names(name: str) -> tuple[str, str, str]:
    """The Services of one resource: all serving pods, the primary, the replicas."""
    return name, f"{name}-primary", f"{name}-replicas"


def pod_name(name: str, ordinal: int) -> str:
    return f"{name}-{ordinal}"
