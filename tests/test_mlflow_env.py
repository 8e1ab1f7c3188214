"""The environment MLflow's client reads is checked at every door before anything runs
(steps/mlflow_env.py), and the check is held to the pinned MLflow's own variables.

Before: `MLFLOW_HTTP_REQUEST_TIMEOUT=abc` (or `nan`) was a ValueError traceback at train's first
request, after fetch and validate had run; `MLFLOW_HTTP_REQUEST_TIMEOUT=-1` was exit 75 (urllib3
refused it inside the request, which MLflow reports as a failed request); a token with a line
break was quoted whole by http.client's error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.cli import BadInput
from steps.contract import Integer, Number
from steps.mlflow_env import (
    HTTP_RETRY_DEFAULTS,
    MLFLOW_HTTP_SETTINGS,
    MlflowBoolean,
    check_mlflow_environment,
)
from tests.conftest import assert_bad_input

ROOT = Path(__file__).resolve().parents[1]
_KIND_OF_TYPE = {int: Integer, float: Number, bool: MlflowBoolean}


def _mlflow_variables() -> dict:
    """MLflow's variables of its HTTP client, by name (its module's `_EnvironmentVariable`s)."""
    import mlflow.environment_variables as variables

    return {
        var.name: var
        for var in vars(variables).values()
        if isinstance(var, variables._EnvironmentVariable)
        and var.name.lstrip("_").startswith("MLFLOW_HTTP_")
    }


def test_every_http_variable_mlflow_reads_is_checked_with_its_type():
    import mlflow.environment_variables as variables

    found = _mlflow_variables()
    assert set(found) | {"MLFLOW_ALLOW_FILE_STORE"} == set(MLFLOW_HTTP_SETTINGS)
    found["MLFLOW_ALLOW_FILE_STORE"] = variables.MLFLOW_ALLOW_FILE_STORE
    for name, var in found.items():
        assert isinstance(MLFLOW_HTTP_SETTINGS[name], _KIND_OF_TYPE[var.type]), name
    assert set(HTTP_RETRY_DEFAULTS) <= set(MLFLOW_HTTP_SETTINGS)


@contextmanager
def _environ(name: str, value: str):
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name)
        else:
            os.environ[name] = saved


def _mlflow_takes(name: str, value: str) -> bool:
    """Whether MLflow reads `value` for `name` and its request code takes it (the caps of
    rest_utils.py, urllib3's timeout rule); nothing is sent."""
    from mlflow.utils.rest_utils import _validate_backoff_factor, _validate_max_retries
    from urllib3.util.timeout import Timeout

    var = {**_mlflow_variables()}.get(name)
    if var is None:
        return True
    with _environ(name, value):
        try:
            read = var.get()
            if name == "MLFLOW_HTTP_REQUEST_MAX_RETRIES":
                _validate_max_retries(read)
            if name == "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR":
                _validate_backoff_factor(read)
            if name == "MLFLOW_HTTP_REQUEST_TIMEOUT":
                Timeout(read)
        except Exception:
            return False
    return True


_VALUE = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "10", "11", "120", "121", "1.5", "nan", "inf", "abc",
                     "true", "FALSE", "yes", " 1", "1e3", "\u0663", "3600", "99999999"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(MLFLOW_HTTP_SETTINGS)), value=_VALUE)
def test_what_the_check_takes_mlflow_takes(name, value):
    try:
        check_mlflow_environment({name: value})
    except BadInput as exc:
        # A cap below the pipeline's default is named as the cap on the capped variable.
        named = str(exc).startswith(f"{name} is {value[:40]!r}: ") or str(exc).endswith(f"({name})")
        assert named, exc
        return
    if not (value == "" and name in HTTP_RETRY_DEFAULTS):  # the steps set their default then
        assert _mlflow_takes(name, value), f"{name}={value!r} passed, MLflow refuses it"


@pytest.mark.parametrize(
    ("name", "value"),
    [("MLFLOW_HTTP_REQUEST_TIMEOUT", v) for v in ("abc", "nan", "-1", "0", "1.5", "")]
    + [("MLFLOW_HTTP_REQUEST_MAX_RETRIES", v) for v in ("11", "-1", "x")]
    + [("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "121"), ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "nan"),
       ("MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER", "yes"), ("MLFLOW_HTTP_TCP_KEEPALIVE", ""),
       ("MLFLOW_HTTP_TCP_KEEPALIVE_COUNT", "200"), ("MLFLOW_HTTP_POOL_MAXSIZE", "0"),
       ("MLFLOW_ALLOW_FILE_STORE", "yes")],
)  # fmt: skip
def test_a_bad_setting_is_refused_naming_it(name, value):
    if value == "" and name in HTTP_RETRY_DEFAULTS:
        check_mlflow_environment({name: value})  # unset: the steps' default applies
        return
    with pytest.raises(BadInput, match=rf"^{name} is '"):
        check_mlflow_environment({name: value})


def test_a_raised_cap_raises_the_bound_as_mlflow_does():
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "15"}
    with pytest.raises(BadInput, match="MLflow allows at most 10"):
        check_mlflow_environment(env)
    check_mlflow_environment({**env, "_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT": "20"})


@pytest.mark.parametrize("token", ["abc\r\nX-Injected: 1", "t\u00e9st", "a b", "tab\there", "\x7f"])
def test_a_token_that_cannot_go_in_a_header_is_refused_without_showing_it(token):
    with pytest.raises(BadInput, match="MLFLOW_TRACKING_TOKEN holds a") as caught:
        check_mlflow_environment({"MLFLOW_TRACKING_TOKEN": token})
    assert token not in str(caught.value) and "\n" not in str(caught.value)


def test_a_password_that_is_no_utf8_text_is_refused_without_showing_it():
    with pytest.raises(BadInput, match="MLFLOW_TRACKING_PASSWORD holds a byte") as caught:
        check_mlflow_environment({"MLFLOW_TRACKING_PASSWORD": "pw\udcff"})
    assert "pw" not in str(caught.value)
    check_mlflow_environment({"MLFLOW_TRACKING_PASSWORD": "p\u00e4ss w\u00f6rd"})  # base64'd


# Every door, started as a user starts it, with arguments that would run the pipeline (or a step)
# if the environment passed: each must refuse it in one line, exit 2, before anything runs.
def _doors(tmp_path: Path) -> dict[str, list[str]]:
    unread = tmp_path / "input.parquet"
    unread.write_text("not read")
    template = tmp_path / "template.yaml"
    subprocess.run(
        [sys.executable, str(ROOT / "workflows" / "submit.py"), "--render", str(tmp_path / "r")],
        check=True, capture_output=True, cwd=tmp_path, timeout=120,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    (tmp_path / "r" / "workflow-template.yaml").rename(template)
    return {
        "train": [sys.executable, "-m", "steps", "train", "--input", str(unread),
                  "--holdout-out", str(tmp_path / "h.parquet"),
                  "--plot-out", str(tmp_path / "fit.png"),
                  "--tracking-uri", "http://127.0.0.1:9"],
        "deploy": [sys.executable, "-m", "steps", "deploy", "--target", "local", "--version", "1",
                   "--state-dir", str(tmp_path / "state"), "--tracking-uri", "http://127.0.0.1:9"],
        "local runner": [sys.executable, "-m", "workflows.local_runner", str(template),
                         "--run-dir", str(tmp_path / "run")],
        "submit --local": [sys.executable, str(ROOT / "workflows" / "submit.py"), "--local",
                           "--run-dir", str(tmp_path / "run")],
        "demo": [sys.executable, "-m", "workflows.demo", "up"],
    }  # fmt: skip


@pytest.mark.parametrize("door", ["train", "deploy", "local runner", "submit --local", "demo"])
@pytest.mark.parametrize(
    ("name", "value"),
    [("MLFLOW_HTTP_REQUEST_TIMEOUT", "abc"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "-1"),
     ("MLFLOW_TRACKING_TOKEN", "s3cret\nX: 1"), ("MLFLOW_TRACKING_INSECURE_TLS", "yes"),
     ("MLFLOW_TRACKING_CLIENT_CERT_PATH", "/absent/client.pem")],
)  # fmt: skip
def test_every_door_refuses_a_bad_mlflow_variable_before_anything_runs(door, name, value, tmp_path):
    argv = _doors(tmp_path)[door]
    before = sorted(p.name for p in tmp_path.iterdir())
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), name: value,
           "MLFLOW_PORT": "5799", "SERVE_PORT": "5798"}  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180)
    assert_bad_input(proc.returncode, proc.stderr, f"error: {name} ")
    assert "s3cret" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run dir, no .demo/


def test_a_cap_below_the_pipelines_default_is_refused_naming_both():
    """Breaker (issue 11): `_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT=2` with MAX_RETRIES unset passed,
    then the pipeline's default of 3 failed the first request; a bad cap blamed the capped one."""
    with pytest.raises(BadInput) as caught:
        check_mlflow_environment({"_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT": "2"})
    assert str(caught.value) == (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES is '3' (the pipeline's default): MLflow allows at most 2 "
        "(_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT)"
    )
    check_mlflow_environment(
        {"_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT": "2", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
    )
    with pytest.raises(BadInput, match=r"^_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT is 'abc': "):
        check_mlflow_environment(
            {
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
                "_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT": "abc",
            }
        )


def test_every_boolean_of_mlflows_request_credentials_is_checked():
    """mlflow/utils/credentials.py `get_default_host_creds` reads these as MLflow booleans."""
    import mlflow.environment_variables as variables

    from steps.mlflow_env import MLFLOW_CREDENTIAL_SWITCHES

    for name in MLFLOW_CREDENTIAL_SWITCHES:
        assert isinstance(getattr(variables, name), variables._BooleanEnvironmentVariable), name


@pytest.mark.parametrize("name", ["MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_AWS_SIGV4"])
@pytest.mark.parametrize("value", ["yes", "", " true", "2"])
def test_a_credential_switch_mlflow_cannot_read_is_refused(name, value):
    """`MLFLOW_TRACKING_INSECURE_TLS=yes` was a ValueError traceback at train's first request."""
    with pytest.raises(BadInput, match=rf"^{name} is {value!r}: "):
        check_mlflow_environment({name: value})
    with _environ(name, value), pytest.raises(ValueError):
        getattr(__import__("mlflow.environment_variables").environment_variables, name).get()


def test_tls_files_must_be_there_and_insecure_tls_excludes_a_server_certificate(tmp_path):
    """A missing certificate failed every request, then exit 75 as if transient."""
    (tmp_path / "ca.pem").write_text("x")
    for name in ("MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        with pytest.raises(BadInput, match=rf"^{name} is '.*': not a "):
            check_mlflow_environment({name: str(tmp_path / "absent.pem")})
        # Its content is read too (tests/test_tracking_tls.py: real certificates and a server).
        with pytest.raises(BadInput, match=rf"^{name} '.*ca.pem' holds no PEM certificate$"):
            check_mlflow_environment({name: str(tmp_path / "ca.pem")})
    check_mlflow_environment({"MLFLOW_TRACKING_SERVER_CERT_PATH": str(tmp_path)})  # a CA dir
    with pytest.raises(BadInput, match="not a file where"):
        check_mlflow_environment({"MLFLOW_TRACKING_CLIENT_CERT_PATH": str(tmp_path)})
    with pytest.raises(BadInput, match="MLflow takes one or the other"):
        check_mlflow_environment(
            {"MLFLOW_TRACKING_INSECURE_TLS": "true",
             "MLFLOW_TRACKING_SERVER_CERT_PATH": str(tmp_path / "ca.pem")},
            steps_here=False,
        )  # fmt: skip


def test_an_unknown_request_auth_provider_is_refused_naming_the_choices():
    """`MLFLOW_TRACKING_AUTH=bogus` was one warning, then every request went without credentials
    (mlflow/tracking/request_auth/registry.py `fetch_auth`)."""
    with pytest.raises(BadInput, match=r"^MLFLOW_TRACKING_AUTH is 'bogus': .*kubernetes"):
        check_mlflow_environment({"MLFLOW_TRACKING_AUTH": "bogus"})
    check_mlflow_environment({"MLFLOW_TRACKING_AUTH": "kubernetes"})
    check_mlflow_environment({"MLFLOW_TRACKING_AUTH": ""})  # no provider: MLflow adds none
    # In a container this machine's plugins say nothing, nor do its files.
    check_mlflow_environment(
        {"MLFLOW_TRACKING_AUTH": "bogus", "MLFLOW_TRACKING_CLIENT_CERT_PATH": "/absent.pem"},
        steps_here=False,
    )


def test_an_empty_server_certificate_is_refused_as_it_turns_verification_off():
    """Breaker (issue 11): `MLFLOW_TRACKING_SERVER_CERT_PATH=''` passed, and MLflow's `verify=''`
    made requests skip TLS verification: a self-signed server got the user's password."""
    with pytest.raises(BadInput, match=r"^MLFLOW_TRACKING_SERVER_CERT_PATH is empty: .*not verify"):
        check_mlflow_environment({"MLFLOW_TRACKING_SERVER_CERT_PATH": ""})
    with pytest.raises(BadInput, match="is empty"):  # in a container as well
        check_mlflow_environment({"MLFLOW_TRACKING_SERVER_CERT_PATH": ""}, steps_here=False)


def test_sigv4_signing_needs_its_package_where_the_step_runs():
    """`MLFLOW_TRACKING_AWS_SIGV4=true` was a ModuleNotFoundError traceback at the first request
    (mlflow/utils/rest_utils.py imports requests_auth_aws_sigv4 there)."""
    import importlib.util

    assert importlib.util.find_spec("requests_auth_aws_sigv4") is None  # not in the lock
    with pytest.raises(BadInput, match="requests-auth-aws-sigv4 package, which is not installed"):
        check_mlflow_environment({"MLFLOW_TRACKING_AWS_SIGV4": "true"})
    check_mlflow_environment({"MLFLOW_TRACKING_AWS_SIGV4": "false"})
    check_mlflow_environment({"MLFLOW_TRACKING_AWS_SIGV4": "true"}, steps_here=False)
