"""Where the API server is and how to prove who we are: the in-cluster service account, else a kubeconfig.

Read here rather than through the `kubernetes` package: that package costs the operator about 16 MB of
memory for a few hundred lines of YAML reading. Supported, as kubectl reads them: `KUBECONFIG` with several
files (the first to define a name wins), contexts, certificate and key files or inline `-data`, bearer
tokens and token files, `insecure-skip-tls-verify`, and `exec` credential plugins (not `tls-server-name`
or the removed `auth-provider`).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path.home() / ".kube" / "config"
FALLBACK_NAMESPACE = "default"
TOKEN_REREAD_SECONDS = 60.0
EXEC_TIMEOUT_SECONDS = 60.0


class CredentialsError(Exception):
    """No usable credentials: no service account and no (valid) kubeconfig."""


@dataclass(frozen=True)
class ExecPlugin:
    """A kubeconfig `exec` user: a command that prints an ExecCredential with a token or a client cert."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"

    def run(self) -> dict[str, Any]:
        request = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
        environment = {**os.environ, **dict(self.env), "KUBERNETES_EXEC_INFO": json.dumps(request)}
        try:
            result = subprocess.run(
                [self.command, *self.args],
                env=environment,
                capture_output=True,
                text=True,
                timeout=EXEC_TIMEOUT_SECONDS,
                check=True,
            )
            status = json.loads(result.stdout).get("status") or {}
        except (OSError, subprocess.SubprocessError, ValueError, AttributeError) as error:
            raise CredentialsError(
                f"the kubeconfig's exec plugin {self.command!r} failed: {error}"
            ) from error
        if not isinstance(status, dict):
            raise CredentialsError(f"the kubeconfig's exec plugin {self.command!r} printed no status")
        return status


@dataclass
class Credentials:
    server: str
    ssl_context: ssl.SSLContext | bool
    token: str = ""
    token_file: str = ""
    ca_path: str | None = None
    certificate_path: str | None = None
    private_key_path: str | None = None
    insecure: bool = False
    exec_plugin: ExecPlugin | None = None
    _token_read_at: float = field(default=0.0, repr=False)
    _token_expires_at: datetime | None = field(default=None, repr=False)

    def authorization(self) -> str:
        if self.token_file and time.monotonic() - self._token_read_at > TOKEN_REREAD_SECONDS:
            # Service account tokens are rotated on disk by the kubelet.
            self.token = Path(self.token_file).read_text(encoding="utf-8").strip()
            self._token_read_at = time.monotonic()
        if self.exec_plugin is not None and (
            self._token_expires_at is not None and datetime.now(UTC) >= self._token_expires_at
        ):
            self.token, self._token_expires_at = _exec_token(self.exec_plugin.run())
        return f"Bearer {self.token}" if self.token else ""


def load_credentials(kubeconfig: str | None = None, context: str | None = None) -> Credentials:
    """In a pod, its service account (unless a kubeconfig is named); elsewhere the kubeconfig."""
    in_pod = os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").is_file()
    if kubeconfig is None and in_pod:
        return _in_cluster()
    return _from_kubeconfig(Kubeconfig.read(kubeconfig), context)


def kubeconfig_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace kubectl would use: the chosen (else the current) context's, else "default"."""
    try:
        config = Kubeconfig.read(kubeconfig)
        chosen = config.named("contexts", context or config.current_context)
    except CredentialsError:  # missing or unreadable: loading the credentials will say why
        return FALLBACK_NAMESPACE
    return str(chosen.get("namespace") or FALLBACK_NAMESPACE)


@dataclass(frozen=True)
class Kubeconfig:
    """One or more kubeconfig files merged as kubectl merges them."""

    documents: tuple[tuple[Path, Mapping[str, Any]], ...]

    @classmethod
    def read(cls, path: str | None) -> Kubeconfig:
        paths = [
            Path(p) for p in (path or os.environ.get("KUBECONFIG") or str(DEFAULT_KUBECONFIG)).split(":") if p
        ]
        documents = []
        for each in paths:
            try:
                document = yaml.safe_load(each.read_text(encoding="utf-8")) or {}
            except FileNotFoundError:
                continue
            except (OSError, yaml.YAMLError) as error:
                raise CredentialsError(f"cannot read the kubeconfig {each}: {error}") from error
            if not isinstance(document, dict):
                raise CredentialsError(f"the kubeconfig {each} is not a mapping")
            documents.append((each, document))
        if not documents:
            raise CredentialsError(f"no kubeconfig found at {':'.join(map(str, paths))} and not in a pod")
        return cls(tuple(documents))

    @property
    def current_context(self) -> str:
        return next((str(d["current-context"]) for _, d in self.documents if d.get("current-context")), "")

    def named(self, section: str, name: str) -> dict[str, Any]:
        """The named entry's body (its `cluster`, `user` or `context`), with relative paths made absolute."""
        inner = section.removesuffix("s")
        for path, document in self.documents:
            for entry in document.get(section) or []:
                if isinstance(entry, dict) and entry.get("name") == name:
                    body = entry.get(inner) or {}
                    return _absolute(body, path.parent) if isinstance(body, dict) else {}
        raise CredentialsError(f"the kubeconfig has no {inner} named {name!r}")


_PATH_FIELDS = ("certificate-authority", "client-certificate", "client-key", "tokenFile")


def _absolute(body: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Paths in a kubeconfig are relative to the file that holds them, as kubectl reads them."""
    absolute = dict(body)
    for key in _PATH_FIELDS:
        if absolute.get(key):
            absolute[key] = str(base / os.path.expanduser(str(absolute[key])))
    return absolute


def _in_cluster() -> Credentials:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    ca_path = str(SERVICE_ACCOUNT_DIR / "ca.crt")
    credentials = Credentials(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        ssl_context=ssl.create_default_context(cafile=ca_path),
        token_file=str(SERVICE_ACCOUNT_DIR / "token"),
        ca_path=ca_path,
    )
    credentials.authorization()  # read the token now: a missing one fails at startup, not at a request
    return credentials


def _from_kubeconfig(config: Kubeconfig, context_name: str | None) -> Credentials:
    context = config.named("contexts", context_name or config.current_context)
    cluster = config.named("clusters", str(context.get("cluster") or ""))
    user = config.named("users", str(context.get("user") or "")) if context.get("user") else {}
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise CredentialsError("the kubeconfig's cluster has no server")
    if user.get("auth-provider"):
        raise CredentialsError(
            "the kubeconfig's user has an auth-provider, which ftso does not support; use exec"
        )
    plugin = _exec_plugin(user.get("exec"))
    exec_status = plugin.run() if plugin is not None else {}
    token, expires = _exec_token(exec_status) if plugin is not None else (str(user.get("token") or ""), None)
    certificate = _file(user, "client-certificate", exec_status.get("clientCertificateData"))
    key = _file(user, "client-key", exec_status.get("clientKeyData"))
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    ca_path = None if insecure else _file(cluster, "certificate-authority")
    credentials = Credentials(
        server=server,
        ssl_context=_ssl_context(server, ca_path, certificate, key, insecure),
        token=token,
        token_file=str(user.get("tokenFile") or ""),
        ca_path=ca_path,
        certificate_path=certificate,
        private_key_path=key,
        insecure=insecure,
        exec_plugin=plugin,
        _token_expires_at=expires,
    )
    credentials.authorization()
    return credentials


def _exec_plugin(raw: Any) -> ExecPlugin | None:
    if not isinstance(raw, dict):
        return None
    env = tuple(
        (str(e.get("name")), str(e.get("value"))) for e in raw.get("env") or [] if isinstance(e, dict)
    )
    return ExecPlugin(
        command=str(raw.get("command") or ""),
        args=tuple(str(a) for a in raw.get("args") or []),
        env=env,
        api_version=str(raw.get("apiVersion") or ExecPlugin.api_version),
    )


def _exec_token(status: Mapping[str, Any]) -> tuple[str, datetime | None]:
    expires = status.get("expirationTimestamp")
    try:
        expires_at = datetime.fromisoformat(str(expires).replace("Z", "+00:00")) if expires else None
    except ValueError:
        expires_at = None
    return str(status.get("token") or ""), expires_at


def _file(body: Mapping[str, Any], name: str, data: Any = None) -> str | None:
    """A path for a certificate or key given as a path, as base64 `-data`, or as PEM from a plugin."""
    if body.get(name):
        return str(body[name])
    pem = data.encode() if isinstance(data, str) and data else None
    if pem is None and body.get(f"{name}-data"):
        pem = base64.b64decode(str(body[f"{name}-data"]))
    if pem is None:
        return None
    # ssl and kopf load certificates from files: one readable by us only, removed when the process ends.
    handle = tempfile.NamedTemporaryFile(prefix=f"ftso-{name}-", delete=False)  # noqa: SIM115
    with handle:
        os.chmod(handle.name, 0o600)
        handle.write(pem)
    atexit.register(_remove, handle.name)
    return handle.name


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _ssl_context(
    server: str, ca_path: str | None, certificate: str | None, key: str | None, insecure: bool
) -> ssl.SSLContext | bool:
    if not server.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=ca_path)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if certificate:
        context.load_cert_chain(certificate, key)
    return context
