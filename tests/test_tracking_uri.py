"""The tracking URI is checked up front (steps.tracking.TrackingUri), and the check is held to
MLflow's own store registries at the pinned version, not to a list written here.

MLflow builds its tracking and model-registry stores by URI scheme
(mlflow/tracking/_tracking_service/utils.py `_tracking_store_registry`,
mlflow/tracking/_model_registry/utils.py `_get_store_registry`); a URI either registry cannot
take fails only when train first talks to MLflow, after fetch and validate have run. Before this
check, `htp://mlflow:5000` passed check-parameters.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from steps.cli import EXIT_BAD_INPUT
from steps.tracking import (
    DATABASE_SCHEMES,
    NOT_HERE,
    SQLITE_HEADER,
    TRACKING_URI_SCHEMES,
    TrackingUri,
)
from tests.conftest import assert_bad_input


def mlflow_registries() -> list:
    """The tracking-store and model-registry-store registries of the installed MLflow."""
    from mlflow.tracking._model_registry.utils import _get_store_registry
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    return [_tracking_store_registry, _get_store_registry()]


def mlflow_takes(uri: str) -> bool:
    """Whether both of MLflow's registries have a store builder for `uri` (nothing is built)."""
    from mlflow.exceptions import MlflowException

    try:
        for registry in mlflow_registries():
            registry.get_store_builder(uri)
    except (MlflowException, ValueError):  # urllib's "Invalid IPv6 URL" comes through as is
        return False
    return True


def we_take(uri: str) -> bool:
    try:
        TrackingUri().parse(uri)
    except ValueError:
        return False
    return True


def test_the_schemes_are_exactly_those_both_mlflow_registries_know_but_those_not_taken():
    from mlflow.store.db.db_types import DATABASE_ENGINES

    for registry in mlflow_registries():
        assert set(registry._registry) == set(TRACKING_URI_SCHEMES) | set(NOT_HERE)
    assert set(DATABASE_SCHEMES) == set(DATABASE_ENGINES)


@pytest.mark.parametrize("uri", ["uc:http://localhost:8080", "databricks-uc", "databricks-uc://p"])
def test_mlflow_cannot_track_runs_in_unity_catalog(uri):
    """Why `uc` and `databricks-uc` are in NOT_HERE: MLflow 3.17.2's tracking store builder for
    them always raises (the pipeline uses one URI for tracking and registry); before, they passed
    check-parameters and train failed with exit 75."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    with pytest.raises(MlflowException, match="Unity Catalog backend is not supported"):
        _tracking_store_registry.get_store(uri)
    with pytest.raises(ValueError, match="Unity Catalog model registry"):
        TrackingUri().parse(uri)


@pytest.mark.parametrize("uri", ["databricks", "databricks://profile"])
def test_databricks_is_refused_as_untested(uri):
    with pytest.raises(ValueError, match="Databricks workspace, which this pipeline is not tested"):
        TrackingUri().parse(uri)


_SCHEME = st.one_of(
    st.sampled_from([*TRACKING_URI_SCHEMES, *NOT_HERE, "htp", "s3", "gs", "HTTP", "c", "C"]),
    st.builds(
        "{}+{}".format,
        st.sampled_from([*DATABASE_SCHEMES, "postgres", "sqlitex"]),
        st.from_regex(r"[a-z0-9_+.-]{0,8}", fullmatch=True),
    ),
    st.from_regex(r"[A-Za-z][A-Za-z0-9+.-]{0,10}", fullmatch=True),
)
_REST = st.one_of(
    st.sampled_from(["//mlflow:5000", "//", "//:5000", "//h:0", "//h:x", "//[::1]:5000", "//[x"]),
    st.sampled_from(["///tmp/mlflow.db", "//u:p@db/mlflow", "/abs/path", "rel", "\\mlruns"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(scheme=_SCHEME, rest=_REST)
@example(scheme="htp", rest="//mlflow:5000")
@example(scheme="postgresql+psycopg", rest="//u@db/mlflow")
@example(scheme="mysql+a+b", rest="//db")
@example(scheme="C", rest="\\mlruns")
def test_the_check_refuses_every_uri_mlflow_refuses_and_more_only_for_host_and_port(scheme, rest):
    uri = f"{scheme}:{rest}"
    if we_take(uri):
        assert mlflow_takes(uri), f"accepted {uri!r}, which MLflow has no store for"
    elif mlflow_takes(uri):
        # Stricter than MLflow only where MLflow would fail at its first request (or, for the
        # schemes NOT_HERE, where the pipeline cannot work or be tested).
        reasons = (r"needs a host|[Pp]ort|IPv6|white space|file store|Unity Catalog|Databricks"
                   r"|driver|SQLAlchemy|SQLite|no directory")  # fmt: skip
        with pytest.raises(ValueError, match=reasons):
            TrackingUri().parse(uri)


@pytest.mark.parametrize(
    "uri",
    ["http://mlflow.mlops.svc:5000", "https://mlflow.example.org/mlflow", "sqlite:///mlflow.db",
     "postgresql+psycopg://mlflow@db:5432/mlflow"],
)  # fmt: skip
def test_the_uris_users_give_pass(uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert TrackingUri(here=False).parse(uri) == uri
    if not TrackingUri().looked_up_where_the_step_runs(uri) or uri.startswith("sqlite"):
        assert TrackingUri().parse(uri) == uri


def _sqlite_cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Where a `sqlite:` URI points, and what the check says (found by a breaker: a directory,
    a FIFO or /dev/null retried for 105 s, then a traceback; a missing directory was created)."""
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "text.db").write_text("not a database, but long enough to have a header")
    return {
        "a directory": (f"sqlite:///{tmp_path}/dir", "names a directory, not an SQLite"),
        "a named pipe": (f"sqlite:///{tmp_path}/fifo", "names a named pipe, not an SQLite"),
        "a device": ("sqlite:////dev/null", "names a device, not an SQLite"),
        "no database": (f"sqlite:///{tmp_path}/text.db", "not an SQLite database"),
        "no directory": (f"sqlite:///{tmp_path}/none/mlflow.db", "which is no directory here"),
        "under a file": (f"sqlite:///{tmp_path}/text.db/mlflow.db", "which is no directory here"),
        "in memory": ("sqlite://", "in-memory SQLite database"),
        "in memory, named": ("sqlite:///:memory:", "in-memory SQLite database"),
        # Found by a breaker: the option was ignored with a warning, the fragment became part
        # of the file name, `file:` a folder of that name in the working directory.
        "a query": (f"sqlite:///{tmp_path}/ok.db?mode=ro", "has a query or fragment"),
        "a URI filename": (f"sqlite:///file:{tmp_path}/ok.db?uri=true", "has a query or"),
        "a fragment": (f"sqlite:///{tmp_path}/ok.db#frag", "has a query or fragment"),
        "an encoded query": (f"sqlite:///{tmp_path}/ok.db%3Fmode=ro", "has a query or"),
        "an encoded fragment": (f"sqlite:///{tmp_path}/ok.db%23x", "has a query or"),
        "file: without uri=true": (f"sqlite:///file:{tmp_path}/ok.db", "no directory here"),
    }


SQLITE_CASES = ["a directory", "a named pipe", "a device", "no database", "no directory",
                "under a file", "in memory", "in memory, named", "a query", "a URI filename",
                "a fragment", "an encoded query", "an encoded fragment",
                "file: without uri=true"]  # fmt: skip


@pytest.mark.parametrize("case", SQLITE_CASES)
def test_a_sqlite_uri_that_names_no_database_file_is_refused(case, tmp_path):
    uri, reason = _sqlite_cases(tmp_path)[case]
    with pytest.raises(ValueError, match=reason):
        TrackingUri().parse(uri)
    assert not (tmp_path / "none").exists()
    assert not Path("file:").exists()
    assert TrackingUri(here=False).parse(uri) == uri  # for a pod: looked up there


def test_a_sqlite_database_an_empty_file_or_a_new_file_in_a_directory_passes(tmp_path):
    (tmp_path / "db.db").write_bytes(SQLITE_HEADER + bytes(84))
    (tmp_path / "empty.db").touch()  # SQLite takes an empty file as an empty database
    for name in ("db.db", "empty.db", "new.db"):
        assert TrackingUri().parse(f"sqlite:///{tmp_path}/{name}")


@pytest.mark.parametrize(
    ("uri", "driver"),
    [("mssql://u:pw@db/mlflow", "pyodbc"), ("postgresql://db/mlflow", "psycopg"),
     ("mysql://db/mlflow", "MySQLdb"), ("mysql+pymysql://db/mlflow", "pymysql"),
     ("mysql+nosuchdriver://db/mlflow", "'mysql+nosuchdriver'")],
)  # fmt: skip
def test_a_database_uri_whose_driver_is_not_installed_is_refused_naming_it(uri, driver):
    """Before: a traceback at train's first request (ModuleNotFoundError from SQLAlchemy)."""
    if importlib.util.find_spec(driver.strip("'").split(".")[0]) is not None:
        pytest.skip(f"{driver} is installed here")
    with pytest.raises(ValueError, match=re.escape(driver)) as caught:
        TrackingUri().parse(uri)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "mlruns", "/srv/mlruns", "C:\\mlruns"])
def test_a_file_store_passes_only_where_mlflow_allows_it(uri, monkeypatch):
    """MLflow 3.17.2 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is true
    (mlflow/store/tracking/file_store.py): train then failed after fetch and validate ran."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ValueError, match="MLFLOW_ALLOW_FILE_STORE=true"):
        TrackingUri().parse(uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert TrackingUri().parse(uri) == uri


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("htp://mlflow:5000", "no tracking store for the scheme 'htp'"),
        ("s3://bucket/mlruns", "no tracking store for the scheme 's3'"),
        ("http://", "needs a host"),
        ("http://mlflow:99999", "its port is not from 1 to 65535"),
        ("mysql+a+b://db", "not a database dialect+driver"),
        ("http://mlflow :5000", "white space"),
        ("uc:http://localhost:8080", "Unity Catalog model registry"),
        ("databricks-uc", "Unity Catalog model registry"),
        ("databricks", "Databricks workspace"),
        ("sqlite:////dev/null", "names a device"),
        ("sqlite:////nonexistent/dir/mlflow.db", "which is no directory here"),
        ("mssql://u:pw@db/mlflow", "driver 'pyodbc'"),
        ("mysql+nosuchdriver://db/mlflow", "driver SQLAlchemy does not know"),
    ],
)
def test_a_bad_uri_is_refused_before_any_stage_runs_in_one_line(uri, reason, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "steps", "check-parameters", "--mlflow-tracking-uri", uri],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert run.returncode == EXIT_BAD_INPUT
    assert_bad_input(run.returncode, run.stderr, "mlflow-tracking-uri", reason)
    assert run.stdout == ""


def test_train_refuses_a_bad_uri_from_its_environment_before_reading_its_input(tmp_path):
    env = {"MLFLOW_TRACKING_URI": "htp://mlflow:5000", "PATH": "/usr/bin:/bin"}
    unread = tmp_path / "input.parquet"  # it exists (checked at parse) but is no Parquet
    unread.write_text("not read")
    run = subprocess.run(
        [sys.executable, "-m", "steps", "train", "--input", str(unread),
         "--holdout-out", str(tmp_path / "h.parquet"), "--plot-out", str(tmp_path / "fit.png")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert_bad_input(run.returncode, run.stderr, "MLFLOW_TRACKING_URI", "'htp'")
    assert not (tmp_path / "h.parquet").exists()


@pytest.mark.parametrize("uri", ["postgresql://db/mlflow", "sqlite:////data/none/mlflow.db"])
def test_the_argo_door_leaves_what_only_the_pod_can_tell_to_the_pod(uri):
    """submit.py's Argo door checks parameters with `paths_here=False`: a driver or SQLite file
    is looked up by check-parameters in the pod; the local doors (and the step) look it up here."""
    from steps.cli import BadInput
    from steps.contract import check_workflow_parameters
    from steps.stages import WORKFLOW_PARAMETERS

    values = {"mlflow-tracking-uri": uri}
    check_workflow_parameters(values, WORKFLOW_PARAMETERS, paths_here=False)
    with pytest.raises(BadInput, match="mlflow-tracking-uri"):
        check_workflow_parameters(values, WORKFLOW_PARAMETERS)
