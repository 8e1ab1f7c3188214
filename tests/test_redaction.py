"""Credentials never leave in clear: one redaction (steps/redaction.py), tried against every place
the pipeline writes a URL for others to read: error lines, the dataset's Parquet metadata (fetch
and validate), MLflow's `data.source` tag and dataset input (train), the model version's tag
(register), the local runner's progress and run.json, and submit's error lines."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steps import register
from steps.cli import EXIT_TRANSIENT, StepError, one_line, run
from steps.redaction import redact, redact_url, redact_value, redact_values
from steps.settings import DEFAULT_MODEL_NAME
from tests.conftest import free_port
from tests.model_helpers import run_step, step_env
from tests.test_fetch import GsodServer
from workflows.local_runner import run_rendered

SECRET = "s3cr3t-VALUE"

SIGNED = {
    "AWS SigV4": "https://bucket.s3.amazonaws.com/t.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential=AKIA{SECRET}&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900"
    f"&X-Amz-SignedHeaders=host&X-Amz-Signature={SECRET}",
    "AWS session": f"https://b.s3.amazonaws.com/t.csv?X-Amz-Security-Token={SECRET}",
    "GCS V4": f"https://storage.googleapis.com/b/t.csv?X-Goog-Signature={SECRET}&X-Goog-Date=1",
    "Azure SAS": f"https://a.blob.core.windows.net/c/t.csv?sv=2024-01-01&se=2026&sig={SECRET}",
    "token": f"https://example.org/t.csv?token={SECRET}",
    "access_token in fragment": f"https://example.org/t.csv#access_token={SECRET}",
    "user and password": f"https://alice:{SECRET}@mlflow.example.org:5000/",
    "token as user": f"https://{SECRET}@github.com/org/repo.git",
    "database": f"postgresql://mlflow:{SECRET}@db:5432/mlflow",
    "api key": f"https://example.org/t.parquet?api_key={SECRET}&v=2",
    # Path parameters (RFC 3986 3.3), found by a breaker in clear: with and without a host.
    "path token": f"https://example.org/mlflow;token={SECRET}",
    "path password, more path": f"https://example.org/db;user=u;password={SECRET}/x?v=1",
    "path token without host": f"sqlite:///tmp/mlflow.db;token={SECRET}",
    "sqlite query": f"sqlite:///tmp/mlflow.db?mode=ro&password={SECRET}",
    # Found by a breaker: an absolute path came back `sqlite://tmp/...`, another file.
    "sqlite absolute, query": f"sqlite:////tmp/mlflow.db?mode=ro&password={SECRET}",
    "sqlite absolute, path token": f"sqlite:////tmp/mlflow.db;token={SECRET}",
    "query with ;": f"https://example.org/t.csv?v=1;token={SECRET}",
    # Found by a review: a fragment with no host and no query came back unchanged.
    "sqlite absolute, fragment token": f"sqlite:////tmp/x.db#token={SECRET}",
    "fragment only, no host": f"sqlite:///x.db#access_token={SECRET}&v=1",
    # Names that only hold the word, and connection strings inside a value.
    "sslpassword": f"postgresql+psycopg2://h/db?sslpassword={SECRET}",
    "client_secret": f"https://example.org/cb?client_secret={SECRET}&mode=ro",
    "sslkey": f"postgresql://h/db?sslkey={SECRET}&sslmode=require",
    "odbc_connect": f"mssql+pyodbc:///?odbc_connect=DSN%3Dx%3BPWD%3D{SECRET}",
    "odbc_connect, no PWD": f"mssql+pyodbc://h/?odbc_connect=DRIVER%3Dx%3BUID%3D{SECRET}",
    "Password= in a value": f"mssql://h/db?conn=Server%3Dh%3BPassword%3D{SECRET}",
    "PWD= twice encoded": f"mssql://h/db?conn=PWD%253D{SECRET}",
    "'/' in a query value": f"https://example.org/t.csv?token=ab/{SECRET}",
    "broken IPv6, fragment": f"http://[::1/x?a=1#token={SECRET}",
    "broken IPv6, '@' in password": f"http://u:p@{SECRET}@[::1/x",
    # A login cut short ('/' in the password) or a port taken for none: the query still masked.
    "login cut short, query": f"http://u:S3C/pw@h/t.csv?token={SECRET}",
    "bad port, query": f"http://u:pw@h:0/t.csv?token={SECRET}",
}


@pytest.mark.parametrize("url", SIGNED.values(), ids=SIGNED.keys())
def test_every_kind_of_credential_is_masked_and_the_rest_kept(url: str):
    masked = redact_url(url)
    assert SECRET not in masked
    assert "***" in masked
    # What a reader needs to know which table or server was meant stays.
    assert masked.split("://")[0] == url.split("://")[0]
    assert url.rsplit("@", 1)[-1].split("?")[0].split("#")[0].split("/")[0] in masked
    # `sqlite:///x` stays `sqlite:///x` (a '/' inside a masked password or value goes with it).
    assert _path(masked).count("/") == _path(url).count("/")


def _path(url: str) -> str:
    return url.split("?")[0].split("#")[0].rsplit("@", 1)[-1]


def test_plain_urls_and_text_are_unchanged():
    for text in (
        "http://127.0.0.1:5050",
        "https://example.org/t.csv?v=1&X-Amz-Date=20260101&sort=key",
        "models:/dewpoint-lr/3",
        "sqlite:///tmp/mlflow.db",
        "https://example.org/a;v=1/b;type=i?x=2",
        "sqlite:///tmp/x.db?mode=ro&v=1#section",
        "https://s3.example.org/t.csv?X-Amz-SignedHeaders=host&design=a&keyword=b",
        "no url here, 12.8 deg F",
    ):
        assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://u:pw@h:5000/path@x", "http://***@h:5000/path@x"),  # lost `h:5000/path`
        ("see 'http://u:pw@host:5000/a@b/c' now", "see 'http://***@host:5000/a@b/c' now"),
        # Not a port: the password's unencoded '/' cut the authority short, mask to the last '@'.
        (f"http://u:pw@h:{SECRET}/x@host", "http://***@host"),
    ],
)
def test_the_host_after_a_masked_login_stays(text: str, shown: str):
    assert redact(text) == shown


def test_urls_inside_messages_and_nested_values_are_masked():
    message = (
        f"cannot reach MLflow at 'http://u:{SECRET}@h:1' (refused); see http://x/?sig={SECRET}"
    )
    assert SECRET not in redact(message)
    assert redact(message).startswith("cannot reach MLflow at 'http://***@h:1'")
    nested = {"uri": SIGNED["token"], "files": [SIGNED["database"]], "rows": 3}
    assert SECRET not in json.dumps(redact_values(nested))
    assert redact_values(nested)["rows"] == 3


def test_error_lines_are_redacted_by_the_one_exit_path(capsys):
    def fail() -> None:
        raise StepError(f"cannot read table {SIGNED['AWS SigV4']}: HTTP 403")

    assert run(fail) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read table https://bucket.s3.amazonaws.com/t.csv?")
    assert SECRET not in err and "X-Amz-Signature=***" in err
    assert SECRET not in one_line(ValueError(SIGNED["user and password"]))


def test_register_error_line_hides_the_tracking_password():
    uri = f"http://alice:{SECRET}@127.0.0.1:{free_port()}"
    done = run_step("register", "--run-id", "a" * 32, "--tracking-uri", uri)
    assert done.returncode == EXIT_TRANSIENT  # nothing listens there: a retry may find it up
    assert SECRET not in done.stderr + done.stdout
    assert "http://***@127.0.0.1:" in done.stderr


@pytest.fixture
def signed_table(tmp_path: Path):
    """A CSV table served on loopback at a signed URL (the signature is part of the path key)."""
    rows = [f"2024-05-{day:02d},{50 + day},{40 + day * 0.9:.1f}" for day in range(1, 31)]
    csv = ("DATE,TEMP,DEWP\n" + "\n".join(rows) + "\n").encode()
    with GsodServer() as server:
        query = f"X-Amz-Credential=AKIA{SECRET}&X-Amz-Signature={SECRET}&token={SECRET}"
        server.routes[f"/t.csv?{query}"] = [("ok", csv)]
        yield f"{server.url}/t.csv?{query}"


def test_fetch_validate_train_register_write_no_credential(signed_table: str, tmp_path: Path):
    """The signed table URL and a tracking URI with a password go through the real steps: no
    file, tag, input or output line they write holds the secret."""
    out = tmp_path / "out"
    fetched = run_step(
        "fetch", "--source", "table", "--table-uri", signed_table,
        "--output", str(out / "dataset.parquet"), "--outputs-dir", str(out / "o"),
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    validated = run_step(
        "validate", "--input", str(out / "dataset.parquet"), "--min-rows", "1",
        "--output", str(out / "validated.parquet"), "--report", str(out / "report.json"),
    )  # fmt: skip
    assert validated.returncode == 0, validated.stderr
    for name in ("dataset.parquet", "validated.parquet"):
        metadata = pq.read_schema(out / name).metadata[b"dewpoint.source"].decode()
        assert SECRET not in metadata
        assert "/t.csv?X-Amz-Credential=***&X-Amz-Signature=***&token=***" in metadata

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = step_env(MLFLOW_TRACKING_URI=tracking, MLFLOW_EXPERIMENT_NAME="redaction")
    trained = run_step(
        "train", "--input", str(out / "validated.parquet"), "--holdout-out",
        str(out / "holdout.parquet"), "--plot-out", str(out / "fit.png"), env=env,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    outputs = json.loads(trained.stdout.strip().splitlines()[-1])
    registered = run_step(
        "register", "--run-id", outputs["run-id"], "--model-uri", outputs["model-uri"],
        "--workflow-name", f"https://alice:{SECRET}@example.org/t.csv?sig={SECRET}", env=env,
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr

    import mlflow

    client = mlflow.MlflowClient(tracking)
    train_run = client.get_run(outputs["run-id"])
    assert SECRET not in json.dumps(train_run.data.tags)
    assert "X-Amz-Signature=***" in train_run.data.tags["data.source"]
    for dataset_input in train_run.inputs.dataset_inputs:
        assert SECRET not in dataset_input.dataset.source
    version = json.loads(registered.stdout.strip().splitlines()[-1])["version"]
    tags = client.get_model_version(DEFAULT_MODEL_NAME, version).tags
    assert tags[register.TAG_DATA_SOURCE] == train_run.data.tags["data.source"]  # the run's
    assert tags[register.TAG_WORKFLOW_NAME] == "https://***@example.org/t.csv?sig=***"
    assert SECRET not in json.dumps(tags)
    for step in (fetched, validated, trained, registered):
        assert SECRET not in step.stdout + step.stderr
    assert SECRET not in (out / "report.json").read_text()


@pytest.mark.slow
def test_train_against_a_server_with_a_login_in_its_uri_prints_no_credential(
    mlflow_server, signed_table: str, tmp_path: Path
) -> None:
    """MLflow itself prints `View run ... at: <tracking URI>/#/...` to stdout when a run ends
    (mlflow/tracking/_tracking_service/client.py `_log_url`), login included: the step's log,
    and on a cluster the pod's. A server without auth takes (and ignores) the login."""
    out = tmp_path / "out"
    assert run_step(
        "fetch", "--source", "table", "--table-uri", signed_table,
        "--output", str(out / "dataset.parquet"), "--outputs-dir", str(out / "o"),
    ).returncode == 0  # fmt: skip
    host = mlflow_server.url.split("://", 1)[1]
    env = step_env(MLFLOW_TRACKING_URI=f"http://alice:{SECRET}@{host}",
                   MLFLOW_EXPERIMENT_NAME="redaction-login")  # fmt: skip
    trained = run_step(
        "train", "--input", str(out / "dataset.parquet"), "--holdout-out",
        str(out / "holdout.parquet"), "--plot-out", str(out / "fit.png"), env=env,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert SECRET not in trained.stdout + trained.stderr


@pytest.mark.slow
def test_train_prints_one_json_line_on_stdout_without_a_login_too(
    mlflow_server, tmp_path: Path
) -> None:
    """MLflow's `View run ... at:` lines went to stdout beside the outputs' JSON line when the
    tracking URI had no login (docs/steps.md: one JSON line)."""
    out = tmp_path / "out"
    assert run_step(
        "fetch", "--source", "synthetic", "--rows", "400", "--years", "2023",
        "--output", str(out / "dataset.parquet"), "--outputs-dir", str(out / "o"),
    ).returncode == 0  # fmt: skip
    env = step_env(MLFLOW_TRACKING_URI=mlflow_server.url, MLFLOW_EXPERIMENT_NAME="one-line")
    trained = run_step(
        "train", "--input", str(out / "dataset.parquet"), "--holdout-out",
        str(out / "holdout.parquet"), "--plot-out", str(out / "fit.png"), env=env,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    (line,) = trained.stdout.splitlines()
    assert "run-id" in json.loads(line)


def test_local_runner_progress_and_run_record_hold_no_credential(tmp_path: Path):
    from tests.test_local_runner import container, workflow

    show = container(
        "show",
        "import sys; print(sys.argv[1], file=sys.stderr); raise SystemExit(1)",
        ["{{workflow.parameters.mlflow-tracking-uri}}"],
    )
    template = workflow([{"name": "show", "template": "show"}], [show], {"mlflow-tracking-uri": ""})
    out = io.StringIO()
    uri = f"http://alice:{SECRET}@127.0.0.1:5050"
    code = run_rendered(
        template, {"mlflow-tracking-uri": uri}, run_dir=tmp_path / "run", out=out,
        lock_file=tmp_path / "lock",
    )  # fmt: skip
    assert code == 1
    assert SECRET not in out.getvalue()
    assert "| http://***@127.0.0.1:5050" in out.getvalue()  # the step's stderr tail, masked
    record = (tmp_path / "run" / "run.json").read_text()
    assert SECRET not in record
    assert json.loads(record)["parameters"]["mlflow-tracking-uri"] == "http://***@127.0.0.1:5050"


@pytest.mark.parametrize(
    "text",
    [
        f"unsupported URI 'alice:{SECRET}@127.0.0.1:9' for model registry",  # no scheme (a typo)
        f"MLflow at alice:{SECRET}@mlflow.mlops.svc:5000: refused",
        f"http://alice:{SECRET}/x@127.0.0.1:9 is not a URL",  # '/' in the password, unencoded
    ],
)
def test_user_and_password_are_masked_without_a_scheme_or_in_a_broken_url(text: str):
    assert SECRET not in redact(text)
    assert "***@" in redact(text)


def test_model_alias_uris_are_not_mistaken_for_credentials():
    for text in ("models:/dewpoint-lr@champion", "serving models:/a.b@previous-champion now"):
        assert redact(text) == text


def test_a_tracking_uri_without_scheme_is_masked_in_the_error_line():
    """MLflow names the URI it refuses in its own message; the step's one error line masks it."""
    done = run_step(
        "register", "--run-id", "a" * 32, "--tracking-uri", f"alice:{SECRET}@127.0.0.1:9"
    )
    assert done.returncode != 0 and done.stderr.startswith("error: ")
    assert SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "uri",
    [f"http://pipeline-user:{SECRET}{'x' * 60}@127.0.0.1:99999",  # cut at 60 before: unmasked
     f"http://pipeline-user:{SECRET} with space@127.0.0.1:99999"],  # not a URL to the patterns
)  # fmt: skip
def test_a_refused_uri_is_masked_before_it_is_cut_short(uri: str) -> None:
    done = run_step("check-parameters", "--mlflow-tracking-uri", uri)
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert SECRET not in done.stderr + done.stdout
    assert "***@" in done.stderr


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("http://u:pass word@host:5000", "http://***@host:5000"),  # malformed: `redact` misses it
        ("http://u:p@ss@host", "http://***@host"),  # the last `@` ends the login
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("user@example.org", "user@example.org"),  # no `://`: not a URL login
    ],
)
def test_redact_value_masks_the_login_of_a_whole_value_even_where_the_url_is_malformed(
    value: str, shown: str
) -> None:
    assert redact_value(value) == shown
