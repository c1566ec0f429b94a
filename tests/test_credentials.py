"""Reading kubeconfigs and the service account as kubectl does, without the kubernetes package."""

from __future__ import annotations

import base64
import json
import ssl
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftso import credentials
from ftso.credentials import CredentialsError, kubeconfig_namespace, load_credentials


def _kubeconfig(
    path: Path, *, server: str = "http://127.0.0.1:1", user: dict[str, Any] | None = None, **context: str
) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "main",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": user or {}}],
                "contexts": [
                    {"name": "main", "context": {"cluster": "c", "user": "u", **context}},
                    {"name": "other", "context": {"cluster": "c", "user": "u", "namespace": "team-b"}},
                ],
            }
        )
    )
    return path


def test_a_token_user_on_plain_http(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", user={"token": "abc"})
    loaded = load_credentials(str(path))
    assert loaded.server == "http://127.0.0.1:1"
    assert loaded.ssl_context is False
    assert loaded.authorization() == "Bearer abc"


def test_the_context_chosen_else_the_current_one_gives_the_namespace(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", namespace="team-a")
    assert kubeconfig_namespace(str(path)) == "team-a"
    assert kubeconfig_namespace(str(path), "other") == "team-b"
    assert kubeconfig_namespace(str(tmp_path / "missing")) == "default"


def test_several_files_merge_and_the_first_to_name_an_entry_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _kubeconfig(tmp_path / "first", server="http://127.0.0.1:2")
    second = _kubeconfig(tmp_path / "second", server="http://127.0.0.1:3")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{first}:{second}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert load_credentials().server == "http://127.0.0.1:2"


def test_inline_certificate_data_becomes_private_files(tmp_path: Path) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"
    user = {"client-certificate-data": base64.b64encode(pem).decode()}
    cluster_file = credentials._file(user, "client-certificate")
    assert cluster_file is not None
    assert Path(cluster_file).read_bytes() == pem
    assert stat.S_IMODE(Path(cluster_file).stat().st_mode) == 0o600


def test_relative_paths_are_read_from_the_kubeconfigs_directory(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", user={"tokenFile": "token"})
    (tmp_path / "token").write_text("from-file\n")
    assert load_credentials(str(path)).authorization() == "Bearer from-file"


def test_https_without_verification_when_the_kubeconfig_says_so(tmp_path: Path) -> None:
    path = tmp_path / "config"
    _kubeconfig(path, server="https://127.0.0.1:6443")
    document = yaml.safe_load(path.read_text())
    document["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
    path.write_text(yaml.safe_dump(document))
    loaded = load_credentials(str(path))
    assert isinstance(loaded.ssl_context, ssl.SSLContext)
    assert loaded.ssl_context.verify_mode == ssl.CERT_NONE and loaded.insecure


def test_an_exec_plugin_gives_the_token_and_is_asked_again_once_it_expired(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os, pathlib, sys\n"
        f"calls = pathlib.Path({str(calls)!r})\n"
        "n = len(calls.read_text()) if calls.exists() else 0\n"
        "calls.write_text('x' * (n + 1))\n"
        "assert json.loads(os.environ['KUBERNETES_EXEC_INFO'])['kind'] == 'ExecCredential'\n"
        "status = {'token': f'token-{n}', 'expirationTimestamp': '2000-01-01T00:00:00Z'}\n"
        "print(json.dumps({'apiVersion': sys.argv[1], 'kind': 'ExecCredential', 'status': status}))\n"
    )
    version = "client.authentication.k8s.io/v1"
    user = {"exec": {"apiVersion": version, "command": sys.executable, "args": [str(plugin), version]}}
    loaded = load_credentials(str(_kubeconfig(tmp_path / "config", user=user)))
    # Already expired when read: each use asks the plugin again, as kubectl does.
    assert loaded.authorization().startswith("Bearer token-")
    assert len(calls.read_text()) >= 2


def test_a_failing_exec_plugin_says_which_one(tmp_path: Path) -> None:
    user = {"exec": {"command": str(tmp_path / "no-such-plugin")}}
    with pytest.raises(CredentialsError, match="no-such-plugin"):
        load_credentials(str(_kubeconfig(tmp_path / "config", user=user)))


def test_a_missing_context_or_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="no context named 'nope'"):
        load_credentials(str(_kubeconfig(tmp_path / "config")), "nope")
    with pytest.raises(CredentialsError, match="no kubeconfig"):
        load_credentials(str(tmp_path / "absent"))


def test_in_a_pod_the_service_account_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-token")
    (account / "ca.crt").write_text("")  # never loaded: the context below is replaced
    monkeypatch.setattr(credentials, "SERVICE_ACCOUNT_DIR", account)
    monkeypatch.setattr(credentials.ssl, "create_default_context", lambda cafile=None: json.dumps(cafile))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    loaded = load_credentials()
    assert loaded.server == "https://[fd00::1]:443"
    assert loaded.authorization() == "Bearer sa-token"
    assert loaded.ca_path == str(account / "ca.crt")


def test_an_auth_provider_user_is_refused_in_words_not_sent_without_credentials(tmp_path: Path) -> None:
    user = {"auth-provider": {"name": "oidc", "config": {}}}
    with pytest.raises(CredentialsError, match="auth-provider"):
        load_credentials(str(_kubeconfig(tmp_path / "config", user=user)))


def test_a_service_account_without_a_token_falls_back_to_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    monkeypatch.setattr(credentials, "SERVICE_ACCOUNT_DIR", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "config", user={"token": "t"})))
    assert load_credentials().server == "http://127.0.0.1:1"
