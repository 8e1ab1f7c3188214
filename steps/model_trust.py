"""Refuse to load or serve a model version that is not this project's served model.

Loading an MLflow pyfunc runs its code (a models-from-code file, a cloudpickle, code paths), so
whoever can point the `champion` alias at a version of their own would run code inside promote
(which scores the champion) and in the model server. Before promote loads a version, and before
deploy serves one, it is downloaded (data only: nothing is executed) and checked:

- its MLmodel has one flavour, `python_function`, loaded by MLflow's models-from-code loader
  (`mlflow.pyfunc.loaders.code_model`), with no code paths and no pickled Python model;
- the code file it names is byte for byte a `steps/served_model.py` this project ships: the one
  installed with this code, or one listed in PREVIOUS_SERVED_MODEL_SHA256 (when you change
  served_model.py, add the old file's hash there so champions logged by the old code still pass);
- its only artifact is the coefficients JSON (data);
- the version carries the provenance tag our register step always writes (`code.version`).

The code check is the security boundary: code that is byte-identical to ours is ours, whoever
registered it. The tag check tells a version registered by hand from one the pipeline registered;
anyone with write access to the registry can set tags, so it is provenance, not security.
Sources: mlflow 3.17.2 mlflow/pyfunc/model.py (_load_context_model_and_signature reads
`model_code_path`'s base name from the model directory) and mlflow/pyfunc/__init__.py (load_model
imports `loader_module` and adds `code` to sys.path).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from steps.cli import StepError, describe_os_error, one_line
from steps.tracking import error_for, local_write_error

CODE_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"
SERVED_MODEL_FILE = Path(__file__).with_name("served_model.py")
# sha256 of earlier steps/served_model.py files whose logged models may still be champion.
PREVIOUS_SERVED_MODEL_SHA256: frozenset[str] = frozenset(
    {
        # Before the 1 MiB request body limit (issue 10): versions logged with it serve without
        # the limit in the process itself; on the cluster Traefik still refuses larger bodies.
        "59c32607b5f283481df174d6501cb905e3d1c99bd8ce389110ddf2d49d25b2fe",
        # Before the request shape check (issue 10): versions logged with it let MLflow parse any
        # JSON shape (10,000 distinct keys: a 1.96 GB frame), CSV and Parquet.
        "e9af03b721e14243c5afce647a43f0305ab0218747800bd853b79dff2290b82b",
        # Before the comment on why the shape check's parse is not handed on to MLflow: the same
        # code.
        "711d7bb14ed04f7a64b3b3568c0b7d5233f494982ab4a213f3e2acecc429919c",
        # Before json_depth's table look-up: the same depths, counted 8x slower.
        "df17973a4c83ec7f600f1d1931fc1c6901ed0f2f978a42c062dd7adf8c2f1e7c",
    }
)
# Same names as steps/model.py and steps/register.py (not imported: they import more than this).
COEFFICIENTS_ARTIFACT = "coefficients"
PROVENANCE_TAG = "code.version"


class UntrustedModel(StepError):
    """A model version whose code is not this project's served model."""


def known_code_sha256() -> frozenset[str]:
    """Hashes of the served-model code files this project accepts."""
    current = hashlib.sha256(SERVED_MODEL_FILE.read_bytes()).hexdigest()
    return PREVIOUS_SERVED_MODEL_SHA256 | {current}


def untrusted_reason(model_dir: Path, tags: dict[str, str]) -> str | None:
    """Why the downloaded model in `model_dir` (with version tags `tags`) is not ours, or None."""
    try:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    except (OSError, yaml.YAMLError) as exc:
        return f"no readable MLmodel ({type(exc).__name__})"
    flavors = (mlmodel or {}).get("flavors") or {}
    if set(flavors) != {"python_function"}:
        return f"flavours {sorted(flavors)}, not python_function alone"
    pyfunc = flavors["python_function"] or {}
    if pyfunc.get("loader_module") != CODE_MODEL_LOADER:
        return f"loader_module {pyfunc.get('loader_module')!r}, not {CODE_MODEL_LOADER}"
    if pyfunc.get("code") or pyfunc.get("python_model"):
        return "it carries code paths or a pickled Python model"
    code_path = pyfunc.get("model_code_path")
    if not code_path:
        return "no model_code_path"
    code = model_dir / Path(str(code_path)).name
    try:
        digest = hashlib.sha256(code.read_bytes()).hexdigest()
    except OSError:
        return f"its code file {code.name} is missing"
    if digest not in known_code_sha256():
        return f"its code {code.name} (sha256 {digest[:12]}...) is not a served_model.py we ship"
    artifacts = pyfunc.get("artifacts") or {}
    if set(artifacts) != {COEFFICIENTS_ARTIFACT}:
        return f"artifacts {sorted(artifacts)}, not {COEFFICIENTS_ARTIFACT} alone"
    if not tags.get(PROVENANCE_TAG):
        return f"no {PROVENANCE_TAG} tag: not registered by the pipeline's register step"
    return None


def verified_model_dir(client: Any, name: str, version: str, dst: Path, *, role: str) -> Path:
    """Download version `version` of `name` into `dst` and check it; return the model directory.

    Args:
        client: an `MlflowClient` of the registry (its tracking URI is the one downloaded from).
        role: what the version is to the caller, for the message (`champion`, `version`).

    Raises:
        UntrustedModel: one line naming the version and why it is refused.
    """
    import mlflow.artifacts

    tags = dict(client.get_model_version(name, version).tags or {})
    try:
        # The version's own artifact location (a logged model, a run path, a URI), resolved by
        # this client's registry: the global tracking URI may be unset here (deploy).
        source = client.get_model_version_download_uri(name, version)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(dst), tracking_uri=client.tracking_uri
            )
        )
    except Exception as exc:  # missing artifacts, a store we cannot read: one line, nothing loaded
        unwritable = local_write_error(exc)
        if unwritable is not None:  # a full disk here is no registry fault, nor transient
            raise StepError(
                f"cannot download models:/{name}/{version} ({role}) into {dst}: "
                f"{describe_os_error(unwritable)}"
            ) from exc
        # MLflow gone or answering 5xx mid-download is transient (exit 75, Argo retries it).
        raise error_for(exc)(
            f"cannot score models:/{name}/{version} ({role}): downloading it to check it "
            f"failed: {one_line(exc)}"
        ) from exc
    reason = untrusted_reason(local, tags)
    if reason:
        raise UntrustedModel(
            f"{role} {name}/{version} is not this project's served model ({reason}): refusing to "
            "load or serve it; point the alias back at a version the pipeline registered"
        )
    return local
