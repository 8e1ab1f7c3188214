"""Workflow parameter `gsod-path` (issue 12): a local folder or .tar.gz of GSOD files, named as a
parameter, reaches fetch through the rendered template, the local runner and `submit.py --local`;
a bad one is refused in one line, exit 2, before any stage runs."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import tarfile
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steps import fetch
from steps.cli import EXIT_BAD_INPUT, BadInput
from steps.contract import check_workflow_parameters
from steps.gsod_format import GSOD_HEADER
from steps.stages import WORKFLOW_PARAMETERS
from tests.conftest import assert_bad_input, free_port
from workflows import demo, submit
from workflows.local_runner import LocalRunError, run_rendered
from workflows.pipeline import render
from workflows.settings import PipelineSettings

# Station ids no other fixture uses, so rows in a dataset can only have come from these files.
STATIONS = ("72999900001", "72999900002")
DAYS = 70  # per station: 140 rows, above validate's default minimum of 100
FIXTURE_YEAR = "2023"  # the files' year: fetch reads one year per fanned-out item


def gsod_csv(station: str, days: int = DAYS) -> bytes:
    """One station-year file in NCEI's access CSV format (28 quoted columns), dew point below
    temperature every day so that validate keeps every row."""
    lines = [GSOD_HEADER.decode()]
    for day in range(days):
        date = dt.date(int(FIXTURE_YEAR), 1, 1) + dt.timedelta(days=day)
        temp = 45.0 + 25.0 * math.sin(2 * math.pi * day / 50)  # changing as weather does
        dewp = temp - 3.0 - day % 5
        lines.append(
            f'"{station}","{date}","40.0","-75.0","10.0","TEST FIELD, PA US",'
            f'"{temp:6.1f}","24","{dewp:6.1f}","24","1013.2","24","1012.0","24","  9.9","24",'
            f'"  5.0","24"," 10.0"," 15.0","{temp + 5:6.1f}"," ","{temp - 5:6.1f}"," ",'
            f'" 0.00","G","999.9","000000"'
        )
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def gsod_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "gsod-files"
    folder.mkdir()
    for station in STATIONS:
        (folder / f"{station}.csv").write_bytes(gsod_csv(station))
    return folder


@pytest.fixture
def gsod_archive(tmp_path: Path) -> Path:
    """The same two files as one .tar.gz, as NCEI's whole-year archives hold them."""
    archive = tmp_path / "2023.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for station in STATIONS:
            data = gsod_csv(station)
            info = tarfile.TarInfo(f"{station}.csv")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def _template() -> dict:
    return render(PipelineSettings())["workflow-template"]


def _check_and_fetch_only(template: dict) -> dict:
    """The real rendered template with its DAGs cut after fetch: the templates, parameters and
    arguments stay exactly as rendered, so what reaches fetch is what a full run passes it."""
    for dag in (t for t in template["spec"]["templates"] if "dag" in t):
        dag["dag"]["tasks"] = [
            t
            for t in dag["dag"]["tasks"]
            if t["name"] in ("check-parameters", "past-years", "current-years", "fetch")
        ]
    return template


def _year_item(run_dir: Path, step: str) -> dict:
    """The `step` (fetch or validate) of the one year (each year is one dag node of fetch, then
    validate; the fixture files hold one year): its phase, outputs and artifact paths."""
    tasks = json.loads((run_dir / "run.json").read_text())["tasks"]
    (item,) = [
        year["tasks"][step]
        for loop in ("past-years", "current-years")
        for year in (tasks[loop].get("children") or {}).values()
    ]
    return item


def _fetched_stations(run_dir: Path) -> list[str]:
    dataset = _year_item(run_dir, "fetch")["outputs"]["artifacts"]["dataset"]
    return sorted(set(pq.read_table(dataset, columns=["station"]).column("station").to_pylist()))


def _fetched_path(run_dir: Path) -> Path:
    return Path(_year_item(run_dir, "fetch")["outputs"]["artifacts"]["dataset"])


def test_gsod_path_is_a_declared_workflow_parameter_of_fetch() -> None:
    (parameter,) = [p for p in WORKFLOW_PARAMETERS if p.name == "gsod-path"]
    assert [(stage, flag.option) for stage, flag in parameter.flags] == [("fetch", "--path")]
    assert parameter.default == ""
    spec = _template()["spec"]
    assert {"name": "gsod-path", "value": "", "description": parameter.help} in spec["arguments"][
        "parameters"
    ]
    (fetch_template,) = [t for t in spec["templates"] if t["name"] == "fetch"]
    assert "--path={{inputs.parameters.gsod-path}}" in fetch_template["container"]["args"]


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_local_runner_fetches_from_the_gsod_path_parameter(
    kind: str, gsod_folder: Path, gsod_archive: Path, tmp_path: Path
) -> None:
    """The rendered template's check-parameters and fetch tasks, run by the local runner with
    `gsod-path` naming our files: the dataset holds exactly their stations and rows."""
    path = gsod_folder if kind == "folder" else gsod_archive
    run_dir = tmp_path / f"run-{uuid.uuid4().hex[:6]}"
    out = io.StringIO()
    code = run_rendered(
        _check_and_fetch_only(_template()),
        {"gsod-path": str(path), "years": FIXTURE_YEAR, "deploy-target": "local"},
        run_dir=run_dir,
        lock_file=tmp_path / "lock",
        out=out,
    )
    assert code == 0, out.getvalue()
    fetched = _year_item(run_dir, "fetch")["outputs"]["parameters"]
    assert fetched["row-count"] == str(len(STATIONS) * DAYS)
    assert _fetched_stations(run_dir) == list(STATIONS)
    metadata = pq.read_schema(_fetched_path(run_dir)).metadata
    assert json.loads(metadata[b"dewpoint.source"])["path"] == str(path)


@pytest.mark.parametrize(
    ("values", "needles"),
    [
        ({"gsod-path": "{missing}"}, ["gsod-path (fetch --path)", "does not exist"]),
        (
            {"gsod-path": "{folder}", "source": "synthetic"},
            ["gsod-path (fetch --path) is read only with source=gsod", "source is 'synthetic'"],
        ),
        (
            {"table-uri": "{table}"},
            ["table-uri (fetch --table-uri) is read only with source=table"],
        ),
        ({"source": "table"}, ["table-uri (fetch --table-uri) is required with source=table"]),
        (
            {"source": "synthetic", "stations": "72530094846"},
            ["stations (fetch --stations) is read only with source=gsod, bigquery or table"],
        ),
        (
            {"source": "table", "table-uri": " "},
            ["table-uri (fetch --table-uri) is required with source=table"],
        ),
    ],
)
def test_parameter_check_refuses_a_bad_or_unread_gsod_path(
    values: dict[str, str], needles: list[str], gsod_folder: Path, tmp_path: Path
) -> None:
    table = tmp_path / "t.csv"  # a table's name says its format
    table.write_text("date,temp,dewp\n")
    filled = {
        k: v.format(missing=tmp_path / "nowhere", folder=gsod_folder, table=table)
        for k, v in values.items()
    }
    with pytest.raises(BadInput) as raised:
        check_workflow_parameters(filled, WORKFLOW_PARAMETERS)
    for needle in needles:
        assert needle in str(raised.value)
    # Given for the source that reads it, the same values pass.
    check_workflow_parameters({"gsod-path": str(gsod_folder)}, WORKFLOW_PARAMETERS)
    check_workflow_parameters({"source": "table", "table-uri": str(table)}, WORKFLOW_PARAMETERS)


def test_fetch_refuses_a_path_its_source_would_ignore(
    gsod_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out" / "dataset.parquet"
    code = fetch.main(
        ["--source", "synthetic", "--path", str(gsod_folder), "--output", str(output)]
    )
    assert_bad_input(code, capsys.readouterr().err, "--path is read only with --source gsod")
    assert not output.parent.exists()


def test_a_missing_gsod_path_fails_the_first_task_with_exit_2_and_nothing_else_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on Argo, where no up-front check runs: the workflow's first task refuses it."""
    from workflows.local_runner import planning

    monkeypatch.setattr(planning, "check_pipeline_parameters", lambda values, **_: None)
    run_dir = tmp_path / "run"
    out = io.StringIO()
    code = run_rendered(
        _template(),
        {"gsod-path": str(tmp_path / "nowhere"), "deploy-target": "local"},
        run_dir=run_dir,
        lock_file=tmp_path / "lock",
        out=out,
    )
    assert code == 1
    tasks = json.loads((run_dir / "run.json").read_text())["tasks"]
    check = tasks["check-parameters"]
    assert (check["phase"], check["exit_code"], check["attempts"]) == ("Failed", 2, 1)
    assert "error: workflow parameter gsod-path (fetch --path)" in out.getvalue()
    assert {name for name, task in tasks.items() if task["attempts"]} == {"check-parameters"}


def test_submit_local_refuses_a_missing_gsod_path_in_one_line_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_PORT", str(free_port()))
    code = submit.main(["--local", "-p", f"gsod-path={tmp_path / 'nowhere'}"])
    err = capsys.readouterr().err
    assert_bad_input(code, err, "workflow parameter gsod-path (fetch --path)", "does not exist")
    assert code == EXIT_BAD_INPUT
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no MLflow, no run dir, no lock
    with pytest.raises(LocalRunError) as raised:
        run_rendered(_template(), {"gsod-path": str(tmp_path / "x")}, run_dir=tmp_path / "r")
    assert raised.value.exit_code == EXIT_BAD_INPUT and not (tmp_path / "r").exists()


def test_local_doors_read_gsod_when_a_gsod_path_is_given_and_no_source(tmp_path: Path) -> None:
    assert demo.local_parameters(5050)["source"] == "synthetic"
    assert demo.local_parameters(5050, {"gsod-path": str(tmp_path)})["source"] == "gsod"
    assert demo.local_parameters(5050, {"gsod-path": ""})["source"] == "synthetic"
    named = {"gsod-path": str(tmp_path), "source": "synthetic"}
    assert demo.local_parameters(5050, named)["source"] == "synthetic"  # then refused, above
    # `make demo PARAMS="gsod-path=..."` passes no --source, so the demo does not force one.
    args = demo.build_parser().parse_args(["up", "-p", f"gsod-path={tmp_path}"])
    assert args.source is None


def test_make_demo_passes_gsod_path_to_the_demo_and_forces_no_source(tmp_path: Path) -> None:
    """`make demo PARAMS="gsod-path=DIR"` (the recipe run with a stand-in python that records
    its argv): the demo gets the parameter and no `--source`, so it reads gsod; `SOURCE=...`
    still names one."""
    from tests.test_makefile import _make

    def demo_argv(*make_args: str) -> list[str]:
        proc, records = _make(tmp_path, "demo", *make_args)
        assert proc.returncode == 0, proc.stderr
        argv = records[-1]["argv"]
        return argv[argv.index("workflows.demo") + 1 :]

    args = demo.build_parser().parse_args(demo_argv(f"PARAMS=gsod-path={tmp_path}"))
    assert args.source is None and args.parameter == [("gsod-path", str(tmp_path))]
    assert demo.build_parser().parse_args(demo_argv("SOURCE=table")).source == "table"


@pytest.mark.slow
def test_submit_local_and_the_demo_run_the_whole_pipeline_on_the_gsod_path(
    gsod_archive: Path, gsod_folder: Path, tmp_path: Path, demo_ports: tuple[int, int]
) -> None:
    """`python workflows/submit.py --local -p gsod-path=FILE.tar.gz`, then the demo (what `make
    demo PARAMS="gsod-path=DIR"` runs) on the folder: a real MLflow server, the whole pipeline,
    the champion served; each model was trained on our two stations only. Local files are
    anyone's (their FRSHTT flags zeroed here, so validate cannot judge units): only trust-units
    makes a first champion of them (steps/promote.py, rule 2)."""
    from steps.deploy_targets.local import running_server, stop_local
    from workflows.demo import mlflow_down

    mlflow_port, serve_port = demo_ports
    run_dir = tmp_path / "run"
    try:
        code = submit.main(
            [
                "--local",
                "-p",
                f"gsod-path={gsod_archive}",
                "-p",
                f"years={FIXTURE_YEAR}",
                "-p",
                "trust-units=true",
                "--run-dir",
                str(run_dir),
            ]
        )
        assert code == 0
        summary = json.loads((run_dir / "run.json").read_text())
        assert summary["parameters"]["source"] == "gsod"
        assert summary["parameters"]["gsod-path"] == str(gsod_archive)
        promoted = summary["tasks"]["promote"]["outputs"]["parameters"]["reason"]
        assert "taken on trust (--trust-units)" in promoted, promoted
        for task in ("fetch", "validate"):
            rows = _year_item(run_dir, task)["outputs"]["parameters"]["row-count"]
            assert rows == str(len(STATIONS) * DAYS)
        assert _fetched_stations(run_dir) == list(STATIONS)
        served = running_server(tmp_path / ".demo" / "serve")
        assert served is not None and served.model_uri == "models:/dewpoint-lr/1"

        facts = demo.run_demo(
            Path(".demo"),
            mlflow_port,
            serve_port,
            {"gsod-path": str(gsod_folder), "years": FIXTURE_YEAR, "trust-units": "true"},
        )
        demo_run = Path(facts["run_dir"])
        parameters = json.loads((demo_run / "run.json").read_text())["parameters"]
        assert (parameters["source"], parameters["gsod-path"]) == ("gsod", str(gsod_folder))
        assert _fetched_stations(demo_run) == list(STATIONS)
        assert facts["registered_version"] == "2"
    finally:
        stop_local(tmp_path / ".demo" / "serve")
        mlflow_down(tmp_path / ".demo")
