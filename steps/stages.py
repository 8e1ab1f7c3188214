"""Every stage of the pipeline declared once: flags, output parameters and artifacts.

Each stage's CLI, its Argo template, the workflow parameters (with their enums), the parameter
check that runs first, and the tables of docs/steps.md are all generated from these declarations
(see steps/contract.py). To add a flag, add it here and read `args.<name>` in the stage's main.
Only light modules are imported: rendering the workflow and checking parameters stay cheap.

The declarations are data in one shape on purpose, like a table: `duplicates` reports VALIDATE's
and TRAIN's outputs and artifacts as alike by shape, but each line is a fact said only there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from steps.cli import BadInput
from steps.contract import (
    Artifact,
    Boolean,
    Choice,
    CommaList,
    DirectoryPath,
    ExistingPath,
    FilePath,
    Flag,
    HttpUrl,
    Integer,
    Number,
    Output,
    Pairs,
    Stage,
    Switch,
    Text,
    UrlOrFile,
    check_workflow_parameters,
    parameter_check_stage,
    workflow_parameters,
)
from steps.deploy_targets import TARGETS
from steps.model import MODEL_TYPES
from steps.settings import DEFAULT_EXPERIMENT, DEFAULT_MODEL_NAME
from steps.sources import (
    COLUMNS,
    DEFAULT_BASE_URL,
    GSOD_ARCHIVE_SUFFIXES,
    GSOD_FILE_SUFFIXES,
    SOURCES,
    TABLE_FORMATS,
    SourceRequest,
)
from steps.tracking import TrackingUri
from steps.year_items import YEARS

_SOURCE_DEFAULTS = SourceRequest()
_UINT32 = 2**32 - 1  # numpy's seed range
_INT64 = 2**63 - 1
_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"  # a Kubernetes (RFC 1123) name
# A host to bind: DNS labels (letters, digits, inner '-'; RFC 1123), which covers IPv4, or an
# IPv6 address (hex digits and ':'). `-1` passed the old `[A-Za-z0-9.:-]+` and failed at bind.
_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_HOST = rf"{_LABEL}(\.{_LABEL})*|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*"
PORT = Integer(1, 65535)  # a TCP port
# The sources that download over HTTP (steps/sources/http.py), so read --http-retries/-timeout.
_DOWNLOADING = ("gsod", "table")
# Deploy's flags read by one target only (steps/deploy_targets/): their --help heading too.
_LOCAL, _KUBERNETES = ("target", "local"), ("target", "kubernetes")
# What one synthetic fetch may generate, in rows, with every year it is given: it holds them all
# (the GSOD text, then the table, sorted and hashed). Measured with `/usr/bin/time -f %M` on
# `fetch --source synthetic --rows N`: N=1,000,000 peaked at 578 MB (about 420 bytes a row over
# 170 MB at N=100,000 with --years), 2,000,000 at 738 MB with one year; the fetch pod's memory
# limit is 1 GiB (workflows/pipeline.py `_SMALL`), so 1,000,000 leaves room for a slower
# allocator or a larger library.
SYNTHETIC_MAX_ROWS = 1_000_000

# ---- MLflow connection, shared by the stages that talk to the tracking server ----------------
TRACKING_URI = Flag(
    "tracking-uri",
    TrackingUri(),
    "MLflow tracking server",
    env="MLFLOW_TRACKING_URI",
    parameter="mlflow-tracking-uri",
    by_env=True,
)
# MLflow 3.17.2 refuses a registered model name holding '/' or ':', or one that a path
# normalisation would change ('.', '..', names starting '..'): mlflow/utils/validation.py,
# _validate_model_name and path_not_unique. Refused here, before train logs a run.
_MODEL_NAME = r"(?!\.\.)(?!\.$)[^/:]+"
MODEL_NAME = Flag(
    "model-name",
    Text(
        _MODEL_NAME,
        what="a registered model name (no '/' or ':'; not '.' and not starting '..')",
        empty_ok=False,
        max_length=256,
        visible=True,
    ),
    "registered model name in MLflow",
    default=DEFAULT_MODEL_NAME,
    env="MODEL_NAME",
    parameter="model-name",
)
EXPERIMENT = Flag(
    "experiment",
    Text(what="an MLflow experiment name", empty_ok=False, max_length=256),
    "MLflow experiment of the training runs",
    default=DEFAULT_EXPERIMENT,
    env="MLFLOW_EXPERIMENT_NAME",
)
RUN_ID = Flag(
    "run-id",
    Text(r"[0-9a-f]{32}", what="an MLflow run id (32 hex characters)"),
    "train's run-id",
)
VERSION = Flag(
    "version",
    Integer(1, _INT64),
    "registered model version (register's version)",
    env="MODEL_VERSION",
)
WORKFLOW_UID = Flag(
    "workflow-uid", Text(what="an Argo workflow UID"), "provenance: the Argo workflow's UID"
)

FETCH = Stage(
    "fetch",
    "Read weather observations from a source; write the normalised Parquet dataset.",
    (
        Flag("source", Choice(SOURCES), "where fetch reads data", default="gsod",
             env="FETCH_SOURCE", parameter="source"),
        Flag("years", YEARS,
             "years, e.g. 2023,2024; gsod: empty = previous and current calendar year;"
             " synthetic: --rows rows in each year given; table: only the rows of these years"
             " (empty = every row)",
             default=(), env="GSOD_YEARS", parameter="years"),
        Flag("stations", CommaList(Text(r"[A-Za-z0-9]{11}", what="an 11-character station id")),
             "GSOD station ids (USAF + WBAN); empty = whole-year archives; table: only the rows"
             " of these stations (empty = every row)",
             default=(), env="GSOD_STATIONS", parameter="stations",
             read_with=("source", ("gsod", "bigquery", "table"))),
        # A path where the step runs: on this machine for the local runner (process backend);
        # on a cluster, inside the check-parameters and fetch pods, so only with a volume
        # mounted there (the templates mount none) or files baked into the step image.
        Flag("path", ExistingPath(empty_ok=True,
                                  file_ends=(*GSOD_FILE_SUFFIXES, *GSOD_ARCHIVE_SUFFIXES)),
             "local directory, .tar.gz or GSOD .csv/.op file instead of HTTP (where the step"
             " runs: on a cluster a volume must hold it)",
             env="GSOD_PATH", parameter="gsod-path", read_with=("source", "gsod")),
        Flag("base-url", HttpUrl(), "GSOD archive base URL",
             default=DEFAULT_BASE_URL, env="GSOD_BASE_URL", parameter="gsod-base-url",
             read_with=("source", "gsod")),
        # What the table source reads (steps/sources/table.py `fetch`): `s3://`, `ftp://`, a
        # bare `http://` or a path where no file is passed the check and failed in fetch.
        Flag("table-uri", UrlOrFile("a CSV or Parquet file (read) or http(s) URL",
                                    ends=tuple(TABLE_FORMATS)),
             "table source: CSV or Parquet path or URL", env="TABLE_URI", parameter="table-uri",
             read_with=("source", "table"), required_with=("source", "table")),
        Flag("column-map", Pairs(COLUMNS), "table source: temp=TEMP,dewp=DEWP,... (ours=theirs)",
             default={}, env="TABLE_COLUMN_MAP", parameter="column-map",
             read_with=("source", "table")),
        Flag("rows", Integer(1, SYNTHETIC_MAX_ROWS),
             "synthetic source: number of rows (in each year, with --years; rows x years at most"
             f" {SYNTHETIC_MAX_ROWS:,}, as one fetch holds them all: about 420 bytes a row at"
             " peak over 170 MB for Python and the libraries is about 0.6 GB, within the fetch"
             " pod's 1 GiB memory limit)",
             default=_SOURCE_DEFAULTS.rows, env="SYNTHETIC_ROWS",
             parameter="synthetic-rows", parameter_default="1000",
             read_with=("source", "synthetic")),
        Flag("seed", Integer(0, _UINT32), "synthetic source: random seed",
             default=_SOURCE_DEFAULTS.seed, env="SYNTHETIC_SEED",
             read_with=("source", "synthetic")),
        Flag("http-retries", Integer(0, 100),
             "retries on timeouts, dropped connections and 5xx (backoff 0.5 s doubling, max 8 s);"
             " 404 and other 4xx fail at once",
             default=_SOURCE_DEFAULTS.http_retries, env="FETCH_HTTP_RETRIES",
             read_with=("source", _DOWNLOADING)),
        Flag("http-timeout", Number(0, 3600, open_minimum=True),
             "how long a request may wait for the server", default=_SOURCE_DEFAULTS.http_timeout,
             env="FETCH_HTTP_TIMEOUT", units="seconds", read_with=("source", _DOWNLOADING)),
        Flag("output", FilePath(writes=True), "Parquet file to write",
             default=Path("dataset.parquet")),
    ),
    outputs=(
        Output("row-count", "rows written"),
        Output("data-hash", "SHA-256 of the dataset in canonical form"),
    ),
    artifacts=(Artifact("dataset", "output", "dataset.parquet", "the fetched dataset", True),),
)  # fmt: skip

VALIDATE = Stage(
    "validate",
    "Check the fetched dataset against the rules; write the rows kept and a JSON report.",
    (
        Flag("input", FilePath(), "dataset from fetch (Parquet)", required=True),
        Flag("output", FilePath(writes=True), "validated dataset to write", required=True),
        Flag("report", FilePath(writes=True), "JSON report to write (also on failure)",
             required=True),
        Flag("min-rows", Integer(1, _INT64), "fail with fewer rows left", default=100,
             env="VALIDATE_MIN_ROWS"),
        Flag("rain-only", Boolean(), "keep only rain/drizzle days (FRSHTT 2nd character 1)",
             default=False, env="VALIDATE_RAIN_ONLY", parameter="rain-only"),
        Flag("dewp-tolerance", Number(0, 100), "how far a daily mean dewp may exceed temp",
             default=2.0, env="VALIDATE_DEWP_TOLERANCE", units="deg F"),
    ),
    outputs=(
        Output("row-count", "rows kept"),
        Output("dropped-rows", "rows dropped: missing temp/dewp plus removed dewp > temp rows"),
    ),
    artifacts=(
        Artifact("dataset", "input", "dataset.parquet", "fetch's dataset"),
        Artifact("validated", "output", "validated.parquet", "the rows kept", True),
        Artifact("validation-report", "report", "validation.json", "rules and counts", True),
    ),
)  # fmt: skip

TRAIN = Stage(
    "train",
    "Fit dew point on temperature, score a seeded holdout split, log everything to MLflow.",
    (
        Flag("input", ExistingPath(),
             "validated dataset (Parquet), or a directory of them (one per year): read as one",
             required=True),
        Flag("parts", CommaList(Text(r"[A-Za-z0-9][A-Za-z0-9._-]*", what="a part name")),
             "with a directory --input: read only these parts (file names before .parquet, in"
             " the pipeline the years); empty = every part; a missing one is an error",
             default=()),
        Flag("holdout-out", FilePath(writes=True), "write the holdout sample here (Parquet)",
             required=True),
        Flag("plot-out", FilePath(writes=True), "write the fit plot here (PNG)", required=True),
        Flag("model-type", Choice(MODEL_TYPES), "regression model", default="linear",
             env="MODEL_TYPE", parameter="model-type"),
        Flag("alpha", Number(0, 1e6), "ElasticNet alpha", default=0.5),
        Flag("l1-ratio", Number(0, 1), "ElasticNet l1_ratio", default=0.5),
        Flag("test-size", Number(0, 1, open_minimum=True, open_maximum=True),
             "holdout fraction", default=0.2),
        Flag("seed", Integer(0, _UINT32), "split and model seed", default=42),
        TRACKING_URI,
        EXPERIMENT,
    ),
    outputs=(
        Output("run-id", "the MLflow run"),
        Output("model-uri", "the logged model (runs:/<run-id>/model)"),
        Output("rmse", "holdout RMSE, deg F"),
        Output("mae", "holdout MAE, deg F"),
        Output("r2", "holdout R2"),
        Output("data-hash",
               "the data hash of the run (tag data.fetched_hash): the parts' fetched hashes, from"
               " their validation reports, combined (steps/training_data.py combined_hash)"),
    ),
    artifacts=(
        Artifact("validated", "input", "validated.parquet", "validate's rows"),
        Artifact("holdout", "holdout-out", "holdout.parquet", "the holdout sample", True),
        Artifact("plot", "plot-out", "fit.png", "the fit plot", True),
    ),
)  # fmt: skip

REGISTER = Stage(
    "register",
    "Make a training run's model a version of the registered model, with provenance tags.",
    (
        Flag("model-uri", Text(r"\S+", what="a model URI"),
             "train's model-uri (default runs:/<run-id>/model)"),
        Flag("run-id", RUN_ID.kind, RUN_ID.help, required=True),
        MODEL_NAME,
        Flag("code-version", Text(what="a version string"),
             "tag code.version (default: this package's version)", env="CODE_VERSION"),
        Flag("workflow-name", Text(what="an Argo workflow name"),
             "provenance: the Argo workflow's name", env="WORKFLOW_NAME"),
        Flag("workflow-uid", WORKFLOW_UID.kind, WORKFLOW_UID.help, env="WORKFLOW_UID"),
        TRACKING_URI,
    ),
    outputs=(
        Output("model-name", "the registered model's name"),
        Output("version", "the registered version (reused when the run has one)"),
    ),
)  # fmt: skip

# promote's champion-version when there is no champion at all (the pipeline then has nothing to
# deploy: workflows/pipeline.py).
NO_CHAMPION = "none"
# The registered model's aliases promote moves (steps/promote.py), which deploy can serve.
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
# How many times deploy --alias serves an alias that keeps moving under it before it gives up
# (exit 75, steps/deploy.py): a promote takes seconds and runs are weekly, so a third move within
# one deploy is not a race. The deploy pod's deadline allows this many --timeout waits.
ALIAS_ROUNDS = 3

PROMOTE = Stage(
    "promote",
    "The gate: move the champion alias to a new version only if it is not worse on holdout.",
    (
        VERSION,
        Flag("holdout", FilePath(), "train's holdout split (Parquet)", required=True),
        MODEL_NAME,
        Flag("tolerance", Number(0, 1000), "how much worse in RMSE the new model may be",
             default=0.0, env="PROMOTE_TOLERANCE", units="deg F", parameter="gate-tolerance"),
        # At least 10 minutes: far above a promote's time from its claim to its alias writes,
        # a few MLflow requests each retried for up to about 48 s (steps/tracking.py).
        Flag("claim-lease", Number(600, 7 * 86400),
             "how long this promote's claim blocks promotes from the same champion if this one "
             "dies before deciding (recorded with the claim, which the others honour)",
             default=3600.0, env="PROMOTE_CLAIM_LEASE", units="seconds",
             parameter="gate-claim-lease"),
        Flag("trust-units", Boolean(),
             "with no champion, promote a version whose training data's units nothing checked "
             "(its run's data.units is unchecked): the data is in deg F on your word",
             default=False, env="PROMOTE_TRUST_UNITS", parameter="trust-units"),
        TRACKING_URI,
    ),
    outputs=(
        Output("promoted", "true or false"),
        Output("reason", "why, in one line"),
        Output("new-rmse", "the new version's holdout RMSE, deg F"),
        Output("champion-rmse", "the old champion's RMSE on the same holdout; none without one"),
        Output("champion-version",
               f"the champion after the gate (deploy serves it); {NO_CHAMPION} without one"),
    ),
    artifacts=(Artifact("holdout", "holdout", "holdout.parquet", "train's holdout split"),),
)  # fmt: skip

DEPLOY = Stage(
    "deploy",
    "Serve one registered model version on a target (a local process or kubernetes).",
    (
        Flag("target", Choice(TARGETS), "where the champion is served", required=True,
             parameter="deploy-target", parameter_default="kubernetes"),
        Flag("version", VERSION.kind, "registered model version to serve (or --alias)"),
        Flag("alias", Choice((CHAMPION, PREVIOUS_CHAMPION)),
             "serve the version this alias names, read again after serving and served again if "
             "it moved meanwhile (or --version)"),
        MODEL_NAME,
        Flag("run-id", RUN_ID.kind,
             "provenance: the MLflow run of the model (default: the version's own, from MLflow)"),
        WORKFLOW_UID,
        Flag("timeout", Number(0, 86400, open_minimum=True),
             "how long to wait for a server's /ping or a rollout", default=300.0,
             units="seconds"),
        TRACKING_URI,
        Flag("host", Text(_HOST, what="a host name or IP address", empty_ok=False, max_length=253),
             "interface to bind", default="127.0.0.1", read_with=_LOCAL),
        Flag("port", PORT, "port to serve on", default=5001, env="SERVE_PORT",
             read_with=_LOCAL),
        # Its writability is deploy's to check (`serving_problem`): --stop only reads it.
        Flag("state-dir", DirectoryPath(writable=False, managed=True),
             "PID/port/version state and server logs",
             default=Path(".demo/serve"), env="DEPLOY_STATE_DIR",
             read_with=_LOCAL),
        Flag("stop", Switch(), "stop the locally served model (by its PID) and exit",
             read_with=_LOCAL),
        Flag("namespace", Text(_NAME, what="a Kubernetes namespace", max_length=63),
             "namespace of the Deployment", default="mlops", env="POD_NAMESPACE", env_from_pod=True,
             read_with=_KUBERNETES),
        Flag("deployment", Text(_NAME, what="a Kubernetes name", max_length=253),
             "Deployment serving the model", default="model-server",
             parameter="serving-deployment", read_with=_KUBERNETES),
        Flag("service-url", HttpUrl(),
             "model server URL for the smoke test (default http://<deployment>.<namespace>.svc:8080)",
             read_with=_KUBERNETES),
        Flag("kube-api", HttpUrl(),
             "Kubernetes API URL (tests); default in-cluster config, else kubeconfig",
             read_with=_KUBERNETES),
    ),
    outputs=(
        Output("served-version", "the version now served (none after --stop)"),
        Output("changed", "false when that version was already served"),
    ),
)  # fmt: skip

# Not a pipeline stage: the mlflow-users Job (kind/base/mlflow/users-job.yaml) runs it as MLflow's
# admin. The users' names and passwords come only from the environment (<ROLE>_USERNAME/PASSWORD).
MLFLOW_AUTH = Stage(
    "mlflow-auth",
    "Create or update MLflow's basic-auth users and the pipeline user's grants, as MLflow's admin.",
    # The pipeline's flags, as a Job takes them: no workflow parameter.
    (
        replace(EXPERIMENT, help="experiment to create; the pipeline user may EDIT it"),
        replace(MODEL_NAME, help="registered model to create; the pipeline user may MANAGE it",
                parameter=None),
        replace(TRACKING_URI, parameter=None, by_env=False),
    ),
)  # fmt: skip

PIPELINE = (FETCH, VALIDATE, TRAIN, REGISTER, PROMOTE, DEPLOY)
# The stages docs/steps.md documents, each with its generated tables.
DOCUMENTED = (*PIPELINE, MLFLOW_AUTH)
WORKFLOW_PARAMETERS = workflow_parameters(PIPELINE)


def check_pipeline_parameters(values: Mapping[str, str], *, paths_here: bool = True) -> None:
    """`check_workflow_parameters` for the pipeline's parameters, then what only the pipeline
    knows: with `source=synthetic` each year's validate reads the `synthetic-rows` rows fetch
    generated for that year (with fetch's default seed) and fails with fewer than its
    `--min-rows` left (which the pipeline leaves at its default) once it dropped the rows with a
    missing value and, with `rain-only`, the dry days; rows validate would fail are refused here,
    before any task runs, not after fetch (`steps.sources.synthetic.validate_problem`).

    Raises:
        BadInput: the first value refused, naming the parameter.
    """
    from steps.sources.synthetic import validate_problem
    from steps.validate import ValidationPolicy
    from steps.year_items import resolve_years

    check_workflow_parameters(values, WORKFLOW_PARAMETERS, paths_here=paths_here)
    given = {p.name: p.default for p in WORKFLOW_PARAMETERS} | dict(values)
    if given["source"].strip() != "synthetic":
        return
    rows, rain_only = FETCH.flag("rows"), VALIDATE.flag("rain-only")
    policy = ValidationPolicy(
        VALIDATE.flag("min-rows").default,
        rain_only.convert(given[rain_only.parameter]),
        VALIDATE.flag("dewp-tolerance").default,
    )
    problem = validate_problem(
        rows.convert(given[rows.parameter]),
        FETCH.flag("seed").default,
        resolve_years(given["years"]),
        policy,
    )
    if problem:
        raise BadInput(
            f"workflow parameter {rows.parameter} ({FETCH.name} {rows.option}) "
            f"{given[rows.parameter]!r}: {problem} ({VALIDATE.flag('min-rows').option}"
            f"{', rain-only' if policy.rain_only else ''}); give more rows"
        )


# The first task of the workflow: every workflow parameter checked with the flags above, so a
# bad value stops the run before any stage writes state (steps/check_parameters.py).
CHECK_PARAMETERS = replace(
    parameter_check_stage("check-parameters", WORKFLOW_PARAMETERS),
    outputs=(
        Output(
            "past-years",
            "the years before the current one, one memoized loop item each (JSON list of"
            " {year, part, memo}), of the years parameter, else the previous calendar year",
        ),
        Output(
            "current-years",
            "the current year, one loop item, never memoized (JSON list of {year, part}); a"
            " source that does not split by year: its one item, whose year is the years given",
        ),
        Output("parts", "every item's part (the years) as a comma list: the parts train reads"),
        Output(
            "data-key",
            "SHA-256 (first 32 hex) of the parameters that decide a year's data and of the"
            " code version: where the years' datasets live in the artifact repository",
        ),
    ),
)
STAGES = {stage.name: stage for stage in (CHECK_PARAMETERS, *DOCUMENTED)}
