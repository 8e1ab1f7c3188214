"""The tracking URI is checked up front (steps.tracking.TrackingUri), and the check is held to
MLflow's own store registries at the pinned version, not to a list written here.

MLflow builds its tracking and model-registry stores by URI scheme
(mlflow/tracking/_tracking_service/utils.py `_tracking_store_registry`,
mlflow/tracking/_model_registry/utils.py `_get_store_registry`); a URI either registry cannot
take fails only when train first talks to MLflow, after fetch and validate have run. Before this
check, `htp://mlflow:5000` passed check-parameters.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from steps.cli import EXIT_BAD_INPUT
from steps.tracking import DATABASE_SCHEMES, TRACKING_URI_SCHEMES, TrackingUri
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


def test_the_schemes_are_exactly_those_both_mlflow_registries_know():
    from mlflow.store.db.db_types import DATABASE_ENGINES

    for registry in mlflow_registries():
        assert set(registry._registry) == set(TRACKING_URI_SCHEMES)
    assert set(DATABASE_SCHEMES) == set(DATABASE_ENGINES)


_SCHEME = st.one_of(
    st.sampled_from([*TRACKING_URI_SCHEMES, "htp", "s3", "gs", "ftp", "HTTP", "Https", "c", "C"]),
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
        # Stricter than MLflow only where MLflow would fail at its first request.
        with pytest.raises(ValueError, match=r"needs a host|[Pp]ort|IPv6|white space|file store"):
            TrackingUri().parse(uri)


@pytest.mark.parametrize(
    "uri",
    ["http://mlflow.mlops.svc:5000", "https://mlflow.example.org/mlflow", "sqlite:///mlflow.db",
     "postgresql+psycopg://mlflow@db:5432/mlflow", "databricks"],
)  # fmt: skip
def test_the_uris_users_give_pass(uri):
    assert TrackingUri().parse(uri) == uri


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
