"""The pipeline's per-year fan-out: the loop items check-parameters resolves, and `make demo` with
three local years through the local runner (one fetch and one validate node per year, past years
from the memoization cache on a rerun, the run's data hash derived from the years' hashes)."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from steps import check_parameters, revision
from steps.check_parameters import DATA_PARAMETERS, fan_out_outputs
from steps.dataset import read_dataset
from steps.sources.synthetic import generate_files
from steps.training_data import read_part
from steps.year_items import WHOLE_PART, data_key, loop_items, resolve_years
from tests.conftest import free_port
from tests.test_fetch import GsodServer, year_archive
from workflows.demo import main as demo_main
from workflows.demo import run_demo
from workflows.local_runner import run_rendered
from workflows.local_runner.cache import LocalCache
from workflows.pipeline import render
from workflows.settings import PipelineSettings

TODAY = dt.date(2026, 3, 1)


def test_empty_years_are_the_previous_and_the_current_year_and_given_ones_sorted() -> None:
    assert resolve_years("", TODAY) == (2025, 2026)
    assert resolve_years("2024,2022", TODAY) == (2022, 2024)
    with pytest.raises(ValueError, match="item '2024' is given twice"):
        resolve_years("2024,2022,2024", TODAY)  # as every door refuses it (issue 11)
    with pytest.raises(ValueError, match=r"item ' 2022' .* without white space at either end"):
        resolve_years("2024, 2022", TODAY)  # each item is taken as given, as a whole value is
    with pytest.raises(ValueError, match="1901"):
        resolve_years("1800", TODAY)


def test_past_years_keep_their_memo_key_and_the_current_year_has_none() -> None:
    past, current = loop_items("gsod", "2024,2025,2026", "k", TODAY)
    assert past == [{"year": "2024", "part": "2024", "memo": "k-2024"},
                    {"year": "2025", "part": "2025", "memo": "k-2025"}]  # fmt: skip
    # The current year runs through the templates without `memoize`: no key at all.
    assert current == [{"year": "2026", "part": "2026"}]
    assert loop_items("gsod", "2024,2025,2026", "k", TODAY) == (past, current)
    assert loop_items("gsod", "2020", "k", TODAY) == (
        [{"year": "2020", "part": "2020", "memo": "k-2020"}], []
    )  # fmt: skip


@pytest.mark.parametrize("source", ["gsod", "table"])
def test_a_year_after_today_s_is_refused_naming_it_and_this_year(source: str) -> None:
    """No source has a day of a later year: 2027 was a loop item fetched on every run (gsod: a
    404 from NCEI, exit 1; table: silently nothing) (issue 11)."""
    with pytest.raises(ValueError, match=r"item '2027' is after this year, 2026"):
        loop_items(source, "2025,2027", "k", TODAY)
    next_year = loop_items(source, "2025,2027", "k", dt.date(2027, 1, 1))  # then it is this year
    assert "2027" in json.dumps(next_year)


def test_a_source_that_does_not_split_by_year_is_one_item_of_the_years_given() -> None:
    """A table is read whole, in one item never memoized; its rows are those of the years given
    (fetch --years), every row with none: the years were silently ignored (issue 11)."""
    assert loop_items("table", "", "k", TODAY) == ([], [{"year": "", "part": WHOLE_PART}])
    assert loop_items("table", "2024,2022", "k", TODAY) == (
        [], [{"year": "2022,2024", "part": WHOLE_PART}]
    )  # fmt: skip
    # The years decide its rows, so its data key.
    table = {"source": "table", "table-uri": "t.csv"}
    keys = {fan_out_outputs({**table, "years": y})["data-key"] for y in ("", "2022", "2023")}
    assert len(keys) == 3


@pytest.mark.parametrize("name", DATA_PARAMETERS)
def test_every_parameter_that_decides_a_year_and_the_code_version_change_the_data_key(
    name: str,
) -> None:
    base = {n: "x" for n in DATA_PARAMETERS}
    key = data_key(base, DATA_PARAMETERS, "1.0")
    assert data_key({**base, name: "y"}, DATA_PARAMETERS, "1.0") != key
    assert data_key(base, DATA_PARAMETERS, "1.1") != key
    # The years and the model's parameters do not: a year's data is the same for any model.
    assert data_key({**base, "years": "2020", "model-type": "e"}, DATA_PARAMETERS, "1.0") == key


def test_any_edit_of_the_steps_code_changes_the_data_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data key's code version holds a fingerprint of the steps' source, so a past year is
    fetched and validated again by changed code (before: the package version alone, 0.1.0 for
    hundreds of commits, and a year validated by older code came from the cache)."""
    package = tmp_path / "steps"
    shutil.copytree(Path(revision.__file__).parent, package, ignore=shutil.ignore_patterns("*.pyc"))
    before = revision.code_fingerprint(package)
    assert before == revision.code_fingerprint()  # the same files, the same fingerprint
    validate = package / "validate.py"
    validate.write_text(validate.read_text() + "\n# an edit\n")
    assert revision.code_fingerprint(package) != before

    values = {"source": "synthetic", "years": "2021"}
    key = fan_out_outputs(values)["data-key"]
    monkeypatch.setattr(check_parameters, "code_fingerprint", lambda: "0" * 16)
    assert fan_out_outputs(values)["data-key"] != key


def test_check_parameters_outputs_are_the_loop_items_the_parts_and_the_key() -> None:
    this_year = dt.date.today().year
    outputs = fan_out_outputs(
        {"source": "synthetic", "years": f"{this_year},2023,2021"}, code_version="1"
    )
    past = json.loads(outputs["past-years"])
    assert [i["year"] for i in past] == ["2021", "2023"]
    assert past[0]["memo"] == f"{outputs['data-key']}-2021"
    assert json.loads(outputs["current-years"]) == [{"year": str(this_year),
                                                      "part": str(this_year)}]  # fmt: skip
    assert outputs["parts"] == f"2021,2023,{this_year}"


PAST, CURRENT = "past-years", "current-years"  # the loops: one dag node (fetch, validate) a year


def year_nodes(run: dict, loop: str, step: str) -> dict[str, dict]:
    """The `step` (fetch or validate) of every year of `loop` in a run.json, by year: each
    year's dag node (`<loop>(<index>:...,year:<year>)`) holds its fetch and validate."""
    items = run["tasks"][loop].get("children") or {}
    return {re.search(r",year:(\d*)\)$", n)[1]: i["tasks"][step] for n, i in items.items()}


@pytest.mark.slow
def test_demo_with_three_local_years_fans_out_and_a_rerun_takes_past_years_from_the_cache(
    tmp_path: Path,
) -> None:
    root = tmp_path / ".demo"
    mlflow_port, serve_port = free_port(), free_port()
    this_year = dt.date.today().year
    past = [str(this_year - 3), str(this_year - 2)]
    try:
        run_demo(root, mlflow_port, serve_port, {"source": "synthetic", "years": ",".join(past)
                                                 + f",{this_year}"})  # fmt: skip
        (run_dir,) = sorted((root / "runs").iterdir())
        first = json.loads((run_dir / "run.json").read_text())
        for loop, years in ((PAST, past), (CURRENT, [str(this_year)])):
            for step in ("fetch", "validate"):
                nodes = year_nodes(first, loop, step)
                assert list(nodes) == years
                assert {n["phase"] for n in nodes.values()} == {"Succeeded"}
                assert not any(n["memoization"]["hit"] for n in nodes.values() if loop == PAST)
        # The run's data hash: SHA-256 of `<year> <fetched hash>\n` per year, in year order.
        hashes = [
            n["outputs"]["parameters"]["data-hash"]
            for loop in (PAST, CURRENT)
            for n in year_nodes(first, loop, "fetch").values()
        ]
        lines = "".join(f"{y} {h}\n" for y, h in zip([*past, str(this_year)], hashes, strict=True))
        train = first["tasks"]["train"]["outputs"]["parameters"]
        assert train["data-hash"] == hashlib.sha256(lines.encode()).hexdigest()

        # One past year fewer: its objects stay under the data key, and train must skip them.
        later = [past[1], str(this_year)]
        run_demo(root, mlflow_port, serve_port, {"source": "synthetic", "years": ",".join(later)})
        second = json.loads((sorted((root / "runs").iterdir())[-1] / "run.json").read_text())
        for step in ("fetch", "validate"):
            hits = [n["memoization"]["hit"] for n in year_nodes(second, PAST, step).values()]
            assert hits == [True], step
            # The current year is never reused.
            assert [n.get("memoization") for n in year_nodes(second, CURRENT, step).values()] == [
                None
            ], step
        lines = "".join(f"{y} {h}\n" for y, h in zip(later, hashes[1:], strict=True))
        data_hash = second["tasks"]["train"]["outputs"]["parameters"]["data-hash"]
        assert data_hash == hashlib.sha256(lines.encode()).hexdigest()
    finally:
        demo_main(["down", "--root", str(root), "--mlflow-port", str(mlflow_port),
                   "--serve-port", str(serve_port)])  # fmt: skip


def _fetch_and_validate_only(template: dict, also: tuple[str, ...] = ()) -> dict:
    """The rendered template cut after validate: the real check-parameters and years (fetch,
    then validate, of each) templates and tasks, without the stages that need MLflow (but for
    those in `also`)."""
    cut = copy.deepcopy(template)
    entry = next(t for t in cut["spec"]["templates"] if t["name"] == cut["spec"]["entrypoint"])
    keep = ("check-parameters", PAST, CURRENT, *also)
    entry["dag"]["tasks"] = [t for t in entry["dag"]["tasks"] if t["name"] in keep]
    return cut


def test_a_rerun_with_every_past_year_cached_downloads_only_the_current_year(
    tmp_path: Path,
) -> None:
    """Real HTTP on 127.0.0.1 serving GSOD-format `archive/<year>.tar.gz` files, counted; the
    memoization caches hold one entry per past year however many runs there are."""
    this_year = dt.date.today().year
    years = [this_year - 2, this_year - 1, this_year]
    template = _fetch_and_validate_only(render(PipelineSettings())["workflow-template"])
    cache = tmp_path / "cache"
    caches = {t["memoize"]["cache"]["configMap"]["name"] for t in
              template["spec"]["templates"] if t.get("memoize")}  # fmt: skip
    assert caches == {"dewpoint-pipeline-fetch-cache", "dewpoint-pipeline-validate-cache"}
    runs = ("run1", "run2", "run3")
    with GsodServer() as server:
        for year in years:
            files = dict(generate_files(400, 7, year=year))
            server.routes[f"/archive/{year}.tar.gz"] = [("ok", year_archive(files))]
        params = {"source": "gsod", "gsod-base-url": server.url,
                  "years": ",".join(map(str, years))}  # fmt: skip
        entries = []
        for run in runs:
            out = io.StringIO()
            code = run_rendered(template, params, run_dir=tmp_path / run, cache_dir=cache, out=out)
            assert code == 0, out.getvalue()
            entries.append({name: sorted(LocalCache(cache).entries(name)) for name in caches})
        hits = {int(path.split("/")[-1].split(".")[0]): n for path, n in server.hits.items()}
    assert hits == {years[0]: 1, years[1]: 1, this_year: len(runs)}
    # Bounded: after the first run every cache holds the two past years' keys, and no run adds
    # one (a key per run for the current year would add an entry per run, never pruned);
    # validate's keys also hold the hash of the data fetched, the same from run to run here.
    first = json.loads((tmp_path / "run1" / "run.json").read_text())
    key = first["tasks"]["check-parameters"]["outputs"]["parameters"]["data-key"]
    fetched = year_nodes(first, PAST, "fetch")
    expected = {
        "dewpoint-pipeline-fetch-cache": sorted(f"{key}-{year}" for year in fetched),
        "dewpoint-pipeline-validate-cache": sorted(
            f"{key}-{year}-{node['outputs']['parameters']['data-hash']}"
            for year, node in fetched.items()
        ),
    }
    assert entries == [expected] * len(runs)
    last = json.loads((tmp_path / runs[-1] / "run.json").read_text())
    for step in ("fetch", "validate"):
        assert [n["memoization"]["hit"] for n in year_nodes(last, PAST, step).values()] == [
            True,
            True,
        ]
        assert [n.get("memoization") for n in year_nodes(last, CURRENT, step).values()] == [None]
    assert "2 item(s), 2 from the memoization cache" in out.getvalue()


def test_a_year_fetched_anew_is_validated_anew_while_its_old_validate_entry_stays(
    tmp_path: Path,
) -> None:
    """A past year's data changes at the source (NOAA corrects it) and only its fetch entry is
    deleted, as a user invalidates a year (or fetch's entry expires first): the year is fetched
    again and validated again, never taken from validate's entry for the data fetched before.
    Before issue 13's fix validate's key was the year's alone: the new data went unvalidated and
    train read the old validation."""
    year = dt.date.today().year - 1
    template = _fetch_and_validate_only(render(PipelineSettings())["workflow-template"])
    cache = tmp_path / "cache"
    route = f"/archive/{year}.tar.gz"
    runs = []
    with GsodServer() as server:
        params = {"source": "gsod", "gsod-base-url": server.url, "years": str(year)}
        for rows, seed in ((400, 7), (300, 8)):
            files = dict(generate_files(rows, seed, year=year))
            server.routes[route] = [("ok", year_archive(files))]
            out = io.StringIO()
            run_dir = tmp_path / f"run{len(runs) + 1}"
            code = run_rendered(template, params, run_dir=run_dir, cache_dir=cache, out=out)
            assert code == 0, out.getvalue()
            runs.append(json.loads((run_dir / "run.json").read_text()))
            if len(runs) == 1:  # the year's fetch entry goes; validate's stays
                key = runs[0]["tasks"]["check-parameters"]["outputs"]["parameters"]["data-key"]
                fetch_cache = cache / "memoize" / "dewpoint-pipeline-fetch-cache.json"
                entries = json.loads(fetch_cache.read_text())
                del entries[f"{key}-{year}"]
                fetch_cache.write_text(json.dumps(entries))
        downloads = server.hits[route]
    assert downloads == 2
    stored = cache / "artifacts" / "dewpoint-pipeline" / "data" / key
    _, fetched = read_dataset(stored / "fetched" / f"{year}.parquet")
    # What train reads was validated from the data fetched last, and says so.
    report = read_part(stored / "validated" / f"{year}.parquet").report
    assert (report["fetched_data_hash"], report["rows_in"]) == (fetched["data_hash"], 300)
    written = json.loads((stored / "reports" / f"{year}.json").read_text())
    assert written["fetched_data_hash"] == fetched["data_hash"]
    hashes = [
        year_nodes(r, PAST, "fetch")[str(year)]["outputs"]["parameters"]["data-hash"] for r in runs
    ]
    assert hashes[1] == fetched["data_hash"] != hashes[0]
    validate = year_nodes(runs[1], PAST, "validate")[str(year)]
    assert validate["memoization"] == {
        "hit": False,
        "key": f"{key}-{year}-{hashes[1]}",
        "cacheName": "dewpoint-pipeline-validate-cache",
    }
    assert validate["outputs"]["parameters"]["row-count"] == str(report["rows_out"])


def test_a_stored_year_deleted_while_its_cache_entry_stays_fails_train_naming_it_until_cleared(
    tmp_path: Path,
) -> None:
    """Argo takes a memoized node's outputs as they were saved, whether or not the objects they
    name still exist (v4.1.2 workflow/controller/cache/cache.go `Entry.Hit`; operator.go
    executeTemplate): a year's validated dataset deleted from the artifact repository while
    validate's entry stays is a cache hit, and train fails naming the year and what to do.
    Deleting that year's validate entries, as docs/cluster.md says, makes the next run redo it."""
    year, kept = dt.date.today().year - 1, dt.date.today().year - 2
    rendered = render(PipelineSettings())["workflow-template"]
    cache = tmp_path / "cache"
    params = {"source": "synthetic", "years": f"{kept},{year}", "synthetic-rows": "200",
              "mlflow-tracking-uri": f"http://127.0.0.1:{free_port()}"}  # fmt: skip

    def run(name: str, template: dict) -> tuple[int, str, dict]:
        out = io.StringIO()
        code = run_rendered(template, params, run_dir=tmp_path / name, cache_dir=cache, out=out)
        return code, out.getvalue(), json.loads((tmp_path / name / "run.json").read_text())

    code, text, first = run("run1", _fetch_and_validate_only(rendered))
    assert code == 0, text
    key = first["tasks"]["check-parameters"]["outputs"]["parameters"]["data-key"]
    validated = cache / "artifacts" / "dewpoint-pipeline" / "data" / key / "validated"
    (validated / f"{year}.parquet").unlink()

    with_train = _fetch_and_validate_only(rendered, also=("train",))
    code, text, second = run("run2", with_train)
    assert code == 1
    assert year_nodes(second, PAST, "validate")[str(year)]["memoization"]["hit"] is True
    assert second["tasks"]["train"]["phase"] == "Failed"
    assert f"input has no part {year} (it has {kept})" in text
    assert "delete that year's cache entries (docs/cluster.md" in text

    # What docs/cluster.md says: delete the year's keys `<data-key>-<year>-*` from validate's cache.
    path = cache / "memoize" / "dewpoint-pipeline-validate-cache.json"
    entries = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in entries.items()
                                if not k.startswith(f"{key}-{year}-")}))  # fmt: skip
    code, text, third = run("run3", _fetch_and_validate_only(rendered))
    assert code == 0, text
    assert year_nodes(third, PAST, "fetch")[str(year)]["memoization"]["hit"] is True
    assert year_nodes(third, PAST, "validate")[str(year)]["memoization"]["hit"] is False
    assert (validated / f"{year}.parquet").is_file()


# ---- the run's deadline over many years --------------------------------------------------------


def _budgets(template: dict) -> dict[str, int]:
    """Each stage's longest possible time, read from the rendered template as Argo enforces it:
    a retried stage ends by its `backoff.maxDuration` (v4.1.2 workflow/controller/operator.go,
    processNodeRetries), another by its pod deadline plus the pod's start."""
    from workflows.pipeline import POD_START_SLACK_SECONDS

    budgets = {}
    for t in template["spec"]["templates"]:
        if "container" in t:
            retry = t.get("retryStrategy")
            budgets[t["name"]] = (
                int(retry["backoff"]["maxDuration"].removesuffix("s"))
                if retry
                else t["activeDeadlineSeconds"] + POD_START_SLACK_SECONDS
            )
    return budgets


def _greedy_makespan(items: int, fetch: int, validate: int, slots: int) -> int:
    """When the last year ends if every node takes its whole budget: each year is one dag node
    running fetch, then validate, and the entrypoint DAG's `parallelism` lets `slots` of them
    run at once (Argo v4.1.2 node_counters.go, getActiveChildrenCounter counts dag nodes)."""
    return -(-items // slots) * (fetch + validate)


@pytest.mark.parametrize("years", [1, 2, 4, 5, 10, 25, 120])
@pytest.mark.parametrize("parallelism", [1, 4, 7])
def test_a_run_over_many_years_has_a_deadline_that_cuts_no_retry_short(years, parallelism):
    """The run's activeDeadlineSeconds (its own, or else the template's) outlasts every stage
    taking its whole retry budget, the per-year ones queued behind the fan-out's parallelism:
    a deadline that ends first would stop a retry the step's own budget allows."""
    from workflows.pipeline import build_run_workflow

    settings = PipelineSettings(fan_out_parallelism=parallelism)
    template = render(settings)["workflow-template"]
    budgets = _budgets(template)
    last = dt.date.today().year  # check-parameters accepts 1901 to this year
    chosen = ",".join(str(last - i) for i in range(years))
    run = build_run_workflow(settings, {"source": "gsod", "years": chosen}).to_dict()
    deadline = run["spec"].get("activeDeadlineSeconds", template["spec"]["activeDeadlineSeconds"])
    serial = sum(b for name, b in budgets.items() if name not in ("fetch", "validate"))
    fanned = _greedy_makespan(years, budgets["fetch"], budgets["validate"], parallelism)
    assert deadline >= serial + fanned
    if years <= parallelism:  # within the fan-out the template's own deadline holds
        assert "activeDeadlineSeconds" not in run["spec"]


@pytest.mark.parametrize("which", ["past only", "current only"])
def test_an_empty_list_of_items_skips_its_tasks_and_the_other_list_still_runs(
    tmp_path: Path, which: str
) -> None:
    """Years all past: current-years is Skipped (Argo v4.1.2 dag.go, "Skipped, empty params");
    only the current year: past-years is, and no cache entry is written. (train, which depends on
    both loops, runs after a Skipped current-years in test_gsod_path.py's whole-pipeline runs,
    whose one year is past.)"""
    this_year = dt.date.today().year
    years = [this_year - 2, this_year - 1] if which == "past only" else [this_year]
    template = _fetch_and_validate_only(render(PipelineSettings())["workflow-template"])
    cache = tmp_path / "cache"
    params = {"source": "synthetic", "years": ",".join(map(str, years))}
    out = io.StringIO()
    code = run_rendered(template, params, run_dir=tmp_path / "run", cache_dir=cache, out=out)
    assert code == 0, out.getvalue()
    tasks = json.loads((tmp_path / "run" / "run.json").read_text())["tasks"]
    ran, skipped = (PAST, CURRENT) if which == "past only" else (CURRENT, PAST)
    assert tasks[ran]["phase"] == "Succeeded" and len(tasks[ran]["children"]) == len(years)
    assert tasks[skipped]["phase"] == "Skipped"
    entries = [LocalCache(cache).entries(name) for name in
               ("dewpoint-pipeline-fetch-cache", "dewpoint-pipeline-validate-cache")]  # fmt: skip
    assert [len(e) for e in entries] == ([2, 2] if which == "past only" else [0, 0])


def test_a_table_in_the_workflow_keeps_the_rows_of_the_years_parameter(tmp_path: Path) -> None:
    """The rendered template through the local runner: a table is one item, fetched with the
    `years` parameter, so its dataset holds only those years' rows (they were ignored)."""
    rows = [f"S,{year}-0{month}-01,{50 + month}.0,{40 + month}.0"
            for year in (2021, 2022) for month in range(1, 10)]  # fmt: skip
    table = tmp_path / "obs.csv"
    table.write_text("station,date,temp,dewp\n" + "\n".join(rows) + "\n")
    template = _fetch_and_validate_only(render(PipelineSettings())["workflow-template"])
    params = {"source": "table", "table-uri": str(table), "years": "2022"}
    out = io.StringIO()
    # validate then refuses 9 rows (fewer than its minimum): fetch is what this test is about.
    run_rendered(template, params, run_dir=tmp_path / "run", cache_dir=tmp_path / "c", out=out)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert list(year_nodes(run, CURRENT, "fetch")) == ["2022"]
    (fetched,) = year_nodes(run, CURRENT, "fetch").values()
    assert fetched["phase"] == "Succeeded", out.getvalue()
    assert fetched["outputs"]["parameters"]["row-count"] == "9"
