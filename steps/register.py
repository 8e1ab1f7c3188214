"""register: make a training run's model a version of the registered model, with provenance tags.

Exactly one version per training run, whatever answers are lost: registering the same run again
reuses its version (tags refreshed), the create request is never re-sent blindly (a lost answer is
followed by a look-up of the run's versions first), and duplicates left by an earlier client are
removed, keeping the first. So neither an Argo retry of this step nor a dropped connection leaves
two versions of one run behind.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from steps.cli import BadInput, StepError, one_line, run
from steps.model import MODEL_ARTIFACT_NAME
from steps.redaction import redact
from steps.revision import TAG_GIT_COMMIT, TAG_GIT_DIRTY, source_revision
from steps.settings import MlflowSettings
from steps.stages import REGISTER
from steps.tracking import (
    DOES_NOT_EXIST,
    canonical_version,
    describe_mlflow_error,
    error_for,
    is_transient_mlflow_error,
    mlflow_session,
    named_by_input,
)

# Tag names on the model version; promote and deploy read the same names.
# Two hashes, named: fetch's `data-hash` of the dataset as fetched, and the hash of the rows
# validate kept (the ones train fit on); see docs/steps.md, "Dataset".
TAG_FETCHED_HASH = "data.fetched_hash"
TAG_VALIDATED_HASH = "data.validated_hash"
TAG_DATA_SOURCE = "data.source"
# How the data's units are known (steps/validate.py `units_evidence`, the weakest over the data)
# and what that rests on; promote makes no first champion of `unchecked` data (steps/promote.py).
TAG_DATA_UNITS = "data.units"
TAG_DATA_UNITS_BASIS = "data.units_basis"
# A model trained on several parts (the years, in the pipeline): their names, and per part
# `data.part.<name>.validated_hash`, `.fetched_hash` and `.rows` (steps/train.py).
TAG_DATA_PARTS = "data.parts"
TAG_DATA_PART_PREFIX = "data.part."
# Every data tag above starts so: a version's are its training run's, never a caller's.
DATA_TAG_PREFIX = "data."
TAG_CODE_VERSION = "code.version"
TAG_WORKFLOW_NAME = "workflow.name"
TAG_WORKFLOW_UID = "workflow.uid"


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version and whether this call created it (False: reused the run's version).

    `removed` lists duplicate versions of the same run this call deleted (kept: the first).
    """

    name: str
    version: str
    run_id: str
    created: bool
    removed: tuple[str, ...] = field(default=())

    def note(self) -> str:
        """One line saying what happened, for the step's log."""
        what = "registered as" if self.created else "already registered as"
        line = f"run {self.run_id} {what} version {self.version} of {self.name!r}"
        if self.removed:
            line += (
                f"; removed duplicate version(s) {', '.join(self.removed)} of the same run "
                "(created by re-sent requests whose answers were lost)"
            )
        return line


def provenance_tags(
    *,
    code_version: str | None = None,
    workflow_name: str | None = None,
    workflow_uid: str | None = None,
) -> dict[str, str]:
    """The version's provenance tags a caller gives: the code version (default: this package's
    version) and the workflow. None is about its data: `register_version` copies those from the
    training run, which took them from the rows it fit (steps/train.py)."""
    from steps import __version__

    tags = {
        TAG_CODE_VERSION: code_version or __version__,
        TAG_WORKFLOW_NAME: workflow_name,
        TAG_WORKFLOW_UID: workflow_uid,
    }
    return {k: v for k, v in tags.items() if v}


def run_of_model(client: Any, model_uri: str) -> str | None:
    """The id of the run that logged the model `model_uri` names (None: a model logged outside
    a run): `runs:/<run id>/...`, `models:/<model id>` (train's `model-uri`), `models:/<name>/
    <version>` or `models:/<name>@<alias>`, read as MLflow reads them (mlflow 3.17.2
    mlflow/tracking/_model_registry/fluent.py `_register_model`, mlflow/store/artifact/utils/
    models.py `_parse_model_uri`).

    Raises:
        BadInput: a URI of another kind (a path, `s3://`, `models:/<name>/latest` or a stage,
            which name no one model), or one naming a model MLflow does not have.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
    from mlflow.store.artifact.utils.models import _parse_model_uri, is_models_uri

    try:
        if RunsArtifactRepository.is_runs_uri(model_uri):
            run_id, artifact_path = RunsArtifactRepository.parse_runs_uri(model_uri)
            if not logs_model_at(client, model_uri):
                raise BadInput(
                    f"--model-uri {model_uri}: run {run_id} logged no model at "
                    f"{artifact_path!r} (train logs its model as {MODEL_ARTIFACT_NAME!r})"
                )
            return str(run_id)
        parsed = _parse_model_uri(model_uri) if is_models_uri(model_uri) else None
        if parsed is not None and parsed.model_id:
            return client.get_logged_model(parsed.model_id).source_run_id
        if parsed is not None and parsed.name and (parsed.version or parsed.alias):
            version = (
                client.get_model_version(parsed.name, parsed.version)
                if parsed.version
                else client.get_model_version_by_alias(parsed.name, parsed.alias)
            )
            return version.run_id
    except MlflowException as exc:
        if exc.error_code not in (DOES_NOT_EXIST, "INVALID_PARAMETER_VALUE"):
            raise
        raise BadInput(f"--model-uri {model_uri}: {one_line(exc)}") from None
    raise BadInput(
        f"--model-uri {model_uri} names no one run's model: give runs:/<run-id>/model or "
        "train's model-uri (models:/<model id>)"
    )


def logs_model_at(client: Any, model_uri: str) -> bool:
    """Whether the `runs:/<run>/<path>` URI `model_uri` names a model MLflow can register, found
    by MLflow 3.17.2's own look-up (mlflow/tracking/_model_registry/fluent.py `_register_model`,
    lines 193-212): an `MLmodel` file among the run's own artifacts at that path, else a logged
    model named the path whose source run is the run (`_get_logged_models_from_run`, lines
    344-369, called here).

    Checked before registering rather than by reading MLflow's failure: `_register_model` creates
    the registered model (line 177) before it looks, and its "Unable to find a logged_model"
    error passes its code's name where the number goes (line 211; mlflow/exceptions.py
    `MlflowException.__init__` then reads it as INTERNAL_ERROR), so only its wording would tell
    it from a server failure, which is retried and ends in exit 75.

    `client.list_artifacts` is not what MLflow asks: it also lists the logged model named by the
    path's first part (mlflow/store/artifact/runs_artifact_repo.py `_list_model_artifacts`),
    searched for with `name = '<part>'`, a filter a quote breaks (INVALID_PARAMETER_VALUE for a
    model MLflow registers, logged at `runs:/<run>/it's`). That filter is MLflow's grammar for
    logged models (mlflow/utils/search_logged_model_utils.py `parse_filter_string`: the value
    with `'` stripped at both ends, not `search_literal`'s model-version grammar), and sound for
    every name a logged model may have: none holds a quote (mlflow/utils/validation.py
    `_validate_logged_model_name`). A path no logged model may be named is not searched for.

    Raises:
        mlflow.exceptions.MlflowException: the run is unknown, or MLflow failed.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
    from mlflow.tracking._model_registry.fluent import _get_logged_models_from_run
    from mlflow.utils.validation import _validate_logged_model_name

    repo = RunsArtifactRepository(model_uri, tracking_uri=client.tracking_uri)
    if MLMODEL_FILE_NAME in (a.path for a in repo._list_run_artifacts()):
        return True
    run_id, artifact_path = RunsArtifactRepository.parse_runs_uri(model_uri)
    try:
        _validate_logged_model_name(artifact_path or "")
    except MlflowException:
        return False
    return bool(_get_logged_models_from_run(client.get_run(run_id), artifact_path))


def register_version(
    settings: MlflowSettings,
    run_id: str,
    model_uri: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> RegisteredVersion:
    """Register the model of run `run_id` under `settings.model_name`, or reuse its version.

    Args:
        settings: tracking URI and registered model name.
        run_id: the training run; it must exist.
        model_uri: the logged model (train's `model-uri`); default `runs:/<run_id>/model`.
        tags: provenance tags to set on the version (see `provenance_tags`), none of them a
            data tag (`data.*`): every data tag is copied from the run (`data.fetched_hash`,
            `data.validated_hash`, `data.source`, `data.units`, `data.units_basis`,
            `data.parts` and `data.part.*`, the years trained on and their hashes), which
            train took from the rows it fit. `code.git_commit` and `code.git_dirty` are the
            run's (the code that trained the model), else this process's
            (`steps.revision.source_revision`).

    Returns:
        The run's one version; `created` is False when the run already had one (its tags are
        updated), `removed` names the duplicates deleted.

    Raises:
        StepError: unknown run, MLflow unreachable after the bounded retries, a rejected
            registration, or a duplicate that an alias points at (it is not deleted).
        ValueError: `tags` names a data tag (a caller's data tag could name data the run
            never trained on; issue 10).
    """

    data_tags = sorted(key for key in tags or {} if key.startswith(DATA_TAG_PREFIX))
    if data_tags:
        raise ValueError(f"data tags come from the training run, not the caller: {data_tags}")
    # Taken as given: train's outputs reach here without a trailing newline (steps.files
    # ReservedOutputs writes none, and Argo drops one: v4.1.2 workflow/executor/executor.go
    # SaveParameters), and the stage's parse refuses white space around a value
    # (steps.contract.parse_as_given), so nothing is stripped here.
    if not run_id:
        raise StepError("no run id: pass --run-id (train's run-id output)")
    model_uri = model_uri or f"runs:/{run_id}/{MODEL_ARTIFACT_NAME}"
    name = settings.model_name
    with mlflow_session(settings) as client:
        with named_by_input(f"run {run_id!r}", settings.tracking_uri):
            training_run = client.get_run(run_id)
        # Before anything is created: a version's run and its model must be one (a version of
        # run A's model tagged with run B's data was left behind before).
        model_run = run_of_model(client, model_uri)
        if model_run != run_id:
            raise BadInput(
                f"--model-uri {model_uri} is the model of run {model_run}, not of --run-id "
                f"{run_id}: give the run-id and model-uri one train run wrote"
            )
        # Every data tag is the run's (the years trained on and their hashes too), and the
        # code that trained the model, when the run has it.
        run_tags = training_run.data.tags
        all_tags = {
            key: value
            for key, value in run_tags.items()
            if value and (key.startswith(DATA_TAG_PREFIX) or key in (TAG_GIT_COMMIT, TAG_GIT_DIRTY))
        }
        all_tags.update(tags or {})  # no data tag among them (checked above)
        # Always set: promote and deploy refuse a version without it (steps/model_trust.py).
        all_tags.setdefault(TAG_CODE_VERSION, provenance_tags()[TAG_CODE_VERSION])
        # The code that trained the model is the run's; a run logged without it gets ours.
        for key, value in source_revision().tags().items():
            all_tags.setdefault(key, value)
        all_tags = {key: redact(value) for key, value in all_tags.items()}  # e.g. data.source

        existing = versions_of_run(client, name, run_id)
        created = not existing
        if created:
            _create_version(client, settings, model_uri, run_id, all_tags)
            # The truth after whatever answers were lost: every version this run has now.
            existing = versions_of_run(client, name, run_id)
            if not existing:
                raise StepError(
                    f"MLflow at {settings.tracking_uri} acknowledged registering {model_uri} as "
                    f"{name!r}, but no version of run {run_id} is there"
                )
        # The first version registered for this run is the one a retry must return.
        keep, duplicates = existing[0], existing[1:]
        removed = _remove_duplicates(client, name, run_id, keep, duplicates)
        for key, value in all_tags.items():
            if keep.tags.get(key) != value:
                client.set_model_version_tag(name, keep.version, key, value)
        return RegisteredVersion(name, canonical_version(keep.version), run_id, created, removed)


def versions_of_run(client: Any, name: str, run_id: str) -> list[Any]:
    """Every version of registered model `name` made from run `run_id`, oldest first."""
    from mlflow.exceptions import MlflowException

    run_literal = search_literal(run_id)
    name_literal = search_literal(name)
    if run_literal is None:
        raise StepError(f"run id {run_id!r} cannot be searched for in MLflow (both quote kinds)")
    found = None
    if name_literal is not None:
        try:
            found = client.search_model_versions(
                f"name = {name_literal} and run_id = {run_literal}"
            )
        except MlflowException as exc:
            if exc.error_code != "INVALID_PARAMETER_VALUE":  # e.g. a newline sqlparse rejects
                raise
    if found is None:
        # The name cannot be written in the grammar; the run's versions are few: compare here.
        found = client.search_model_versions(f"run_id = {run_literal}")
    return sorted((mv for mv in found if mv.name == name), key=lambda mv: int(mv.version))


def search_literal(value: str) -> str | None:
    """`value` as a string literal of MLflow's search-filter grammar; None if it cannot be one.

    MLflow 3.17.2 tokenises a filter with sqlparse and takes a string value's text without its
    first and last character (mlflow/utils/search_utils.py, `SearchUtils._strip_quotes`, called by
    `SearchModelVersionUtils._get_value`); nothing is unescaped, so a backslash or a doubled quote
    stays in the value. A value is therefore written in single quotes if it holds no `'`, else in
    double quotes (a quoted identifier to sqlparse, accepted as a value) if it holds no `"`. It has
    no literal if it holds both, or ends with a backslash: sqlparse's string pattern
    (sqlparse/keywords.py, `'(''|\\'|[^'])*'`) reads a backslash before the closing quote as an
    escape and runs on into the next clause.
    """
    if value.endswith("\\"):
        return None
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    return None


@contextmanager
def _requests_sent_once() -> Iterator[None]:
    """MLflow's HTTP client re-sends a failed request, POST included (urllib3 Retry with
    `allowed_methods=None`, mlflow/utils/request_utils.py `augmented_raise_for_status` /
    `_get_request_session`): a create whose answer is lost is made twice. Inside this block each
    request is sent once; the caller decides what to retry."""
    saved = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = saved


def _create_version(
    client: Any, settings: MlflowSettings, model_uri: str, run_id: str, tags: dict[str, str]
) -> None:
    """Register `model_uri` once. After a failure that may have landed (no answer, 5xx), look
    for the run's version before trying again, with the same bounded retries as every step."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = settings.model_name
    retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") or 0)
    backoff = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR") or 0)
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
            if versions_of_run(client, name, run_id):
                return  # an earlier attempt landed; only its answer was lost
        try:
            with _requests_sent_once():
                mlflow.register_model(model_uri, name, tags=tags)
            return
        except Exception as exc:  # MlflowException or a requests error, each sent once
            if isinstance(exc, MlflowException) and not is_transient_mlflow_error(exc):
                # error_for: exit 2 for a certificate that failed verification, else 1.
                raise error_for(exc)(
                    f"cannot register {model_uri} as {name}: {one_line(exc)}"
                ) from exc
            failure = exc
    raise error_for(failure)(  # no answer or 5xx each time: a retry of the step may pass
        f"cannot register {model_uri} as {name}: "
        f"{describe_mlflow_error(settings.tracking_uri, failure)} "
        f"({retries + 1} attempts, each followed by a look-up of run {run_id}'s versions)"
    ) from failure


def _remove_duplicates(
    client: Any, name: str, run_id: str, keep: Any, duplicates: list[Any]
) -> tuple[str, ...]:
    """Delete `duplicates` (later versions of the same run); never one an alias points at."""
    from mlflow.exceptions import MlflowException

    aliased = [mv for mv in duplicates if mv.aliases]
    if aliased:
        names = ", ".join(f"{mv.version} ({', '.join(mv.aliases)})" for mv in aliased)
        raise StepError(
            f"run {run_id} has more than one version of {name!r}: {keep.version} is kept, but "
            f"alias(es) point at the duplicate(s) {names}; move the alias(es) to version "
            f"{keep.version} (or delete the duplicates) and rerun register"
        )
    removed = []
    for mv in duplicates:
        try:
            client.delete_model_version(name, mv.version)
        except MlflowException as exc:
            if exc.error_code != DOES_NOT_EXIST:  # a lost answer: already gone
                raise
        removed.append(str(mv.version))
    return tuple(removed)


def train_and_register(
    frame: Any,
    settings: MlflowSettings,
    config: Any = None,
    **provenance: str,
) -> tuple[Any, RegisteredVersion]:
    """Train on `frame`, log the run and register its model: a registered version in one call.

    For tests and demos (deploy, end-to-end). `config` is a `steps.train.TrainConfig`;
    `provenance` goes to `provenance_tags` (code_version=..., workflow_name=...,
    workflow_uid=...); the version's data tags are the run's, as in `register_version`.

    Returns:
        The `TrainResult` (run id, model URI, metrics, holdout) and the registered version.
    """
    from steps.train import train_and_log

    tags = provenance_tags(**provenance)  # before training: an unknown keyword fails here
    result = train_and_log(frame, settings, config)
    return result, register_version(settings, result.run_id, result.model_uri, tags)


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m steps register --model-uri URI --run-id ID`."""

    def body() -> None:
        args = REGISTER.parse(argv)
        settings = MlflowSettings.from_args(args)
        # The outputs' room first: a full disk fails before a version is registered.
        with REGISTER.reserve_outputs(args.outputs_dir) as outputs:
            registered = register_version(
                settings,
                args.run_id,
                args.model_uri,
                provenance_tags(
                    code_version=args.code_version,
                    workflow_name=args.workflow_name,
                    workflow_uid=args.workflow_uid,
                ),
            )
            print(registered.note(), file=sys.stderr)
            outputs.write({"model-name": registered.name, "version": registered.version})

    return run(body)
