"""Upstream release artifacts the tests check our files against, found without naming a path
outside the repository: `ARGO_INSTALL_YAML` (set by .ci/run), else the copy `make argo-manifest`
put in kind/argo/upstream/. Tests that need one skip with the reason when there is none.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ARGO_INSTALL_ENV = "ARGO_INSTALL_YAML"
DOWNLOADED_ARGO_INSTALL = REPO / "kind" / "argo" / "upstream" / "install.yaml"


def pinned_versions() -> dict[str, str]:
    """kind/versions.env as a dict."""
    pairs = {}
    for line in (REPO / "kind" / "versions.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def argo_install_path() -> Path:
    """The real Argo release install.yaml at the pinned version, checked against its pinned sha256.

    Skips the calling test when neither `ARGO_INSTALL_YAML` nor a `make argo-manifest` copy is
    there; fails when the variable names a missing file or the file is not the pinned release.
    """
    given = os.environ.get(ARGO_INSTALL_ENV)
    if given:
        path = Path(given)
        if not path.is_file():
            pytest.fail(f"{ARGO_INSTALL_ENV}={given} is not a file")
    elif DOWNLOADED_ARGO_INSTALL.is_file():
        path = DOWNLOADED_ARGO_INSTALL
    else:
        pytest.skip(
            f"needs Argo's release install.yaml: set {ARGO_INSTALL_ENV}=/path/to/install.yaml "
            "or run `make argo-manifest` (pinned, sha256-checked download)"
        )
    _check_pinned_sha256(path)
    return path


@functools.cache
def _check_pinned_sha256(path: Path) -> None:
    pinned = pinned_versions()["ARGO_WORKFLOWS_INSTALL_SHA256"]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != pinned:
        pytest.fail(f"{path} has sha256 {actual}, not the pinned {pinned} (kind/versions.env)")


def load_yaml_stream(text: str) -> list[dict[str, Any]]:
    """The non-empty documents of a YAML stream; libyaml's loader when present (the release
    manifest is 190,000 lines: about 10 s with it, over a minute without)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(text, Loader=loader) if doc]


@functools.cache
def _argo_install_docs(path: Path) -> tuple[dict[str, Any], ...]:
    return tuple(load_yaml_stream(path.read_text()))


def argo_install_objects() -> tuple[dict[str, Any], ...]:
    """Every object of the release manifest (skips like `argo_install_path`)."""
    return _argo_install_docs(argo_install_path())


def argo_crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the served version of the Argo CRD for `kind` in the manifest."""
    for doc in argo_install_objects():
        if doc["kind"] == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in doc["spec"]["versions"] if v.get("served")]
            return version["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no CustomResourceDefinition for kind {kind} in the Argo manifest")
