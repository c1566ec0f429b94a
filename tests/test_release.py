"""Release hygiene: one version string for the package, the chart and the image, and the declared
dependencies are exactly the third-party modules the operator imports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

import ftso

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "operator" / "ftso"
CHART = ROOT / "charts" / "ftso"


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_the_package_takes_its_version_from_ftso_version() -> None:
    project = _pyproject()
    assert "version" not in project["project"], "pyproject.toml must not hold a second version string"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ftso.__version__"}


def test_the_chart_and_its_image_carry_the_package_version() -> None:
    chart = _yaml(CHART / "Chart.yaml")
    assert (chart["version"], chart["appVersion"]) == (ftso.__version__, ftso.__version__)
    # An empty tag means the chart's appVersion (templates/deployment.yaml); any other tag must be ours.
    assert _yaml(CHART / "values.yaml")["image"]["tag"] in ("", ftso.__version__)


def test_the_rendered_manifests_run_the_image_of_this_version() -> None:
    documents = list(yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text(encoding="utf-8")))
    deployment = next(d for d in documents if d and d["kind"] == "Deployment")
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert [image.rpartition(":")[2] for image in images] == [ftso.__version__], (
        "manifests/install.yaml drifted from the chart: run `make manifests`"
    )


def _distribution(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement ("PyYAML>=6" -> "pyyaml")."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "ftso"}


def test_the_declared_dependencies_are_the_imported_third_party_modules() -> None:
    declared = {_distribution(r) for r in _pyproject()["project"]["dependencies"]}
    # Module to distribution from the installed metadata, not from guessing (yaml is PyYAML's).
    providers = importlib.metadata.packages_distributions()
    imported: dict[str, set[str]] = {}
    for module in sorted(_imported_top_level_modules()):
        assert module in providers, f"{module} is imported but no installed distribution provides it"
        imported[module] = {_distribution(d) for d in providers[module]}
    undeclared = sorted(m for m, distributions in imported.items() if not distributions & declared)
    assert undeclared == [], (
        f"imported by operator/ftso but not in pyproject.toml's dependencies: {undeclared}"
    )
    unused = sorted(declared - set().union(*imported.values()))
    assert unused == [], f"declared in pyproject.toml but never imported by operator/ftso: {unused}"


def test_the_requirement_parser_reads_names_as_pip_does() -> None:
    assert [
        _distribution(r) for r in ("PyYAML>=6", "prometheus_client", "zope.interface ; python_version>'3'")
    ] == [
        "pyyaml",
        "prometheus-client",
        "zope-interface",
    ]


def test_the_license_file_is_the_license_pyproject_names() -> None:
    assert _pyproject()["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it
    # The image installs the package from these files; its metadata carries the license with it.
    assert "LICENSE" in next(
        line
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if "pyproject.toml" in line
    )


def _locked() -> dict[str, tuple[str, int]]:
    """requirements.lock: distribution -> (pinned version, how many hashes)."""
    locked: dict[str, tuple[str, int]] = {}
    name = ""
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        pinned = re.match(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", line)
        if pinned:
            name = _distribution(pinned.group(1))
            locked[name] = (pinned.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = locked[name]
            locked[name] = (version, hashes + 1)
    return locked


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    locked = _locked()
    missing = sorted({_distribution(r) for r in _pyproject()["project"]["dependencies"]} - set(locked))
    assert missing == [], f"declared but not in requirements.lock (run `make lock`): {missing}"
    unhashed = sorted(name for name, (_, hashes) in locked.items() if hashes == 0)
    assert unhashed == [], f"locked without a hash: {unhashed}"


def test_the_image_installs_the_locked_dependencies_and_only_then_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "pip install --no-cache-dir --no-deps ." in dockerfile, "the package must not pull unlocked deps"
