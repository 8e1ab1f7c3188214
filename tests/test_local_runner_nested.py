"""The local runner's nested DAGs, as Argo v4.1.2 runs them: a task (or each item of a loop) calling
a dag template whose tasks see its inputs, named `<node>.<task>`, memoized by keys made of task
outputs, on small hand-written templates."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
from pathlib import Path

import pytest

from tests.test_local_runner import container, run, workflow
from tests.test_local_runner_loops import _max_running_probe
from workflows.local_runner import LocalRunError, run_rendered
from workflows.local_runner.cache import LocalCache

# Reads <data dir>/<year>.txt, logs it, passes it on as an artifact with its SHA-256 as `hash`.
PRODUCE = (
    "import hashlib, pathlib, sys\n"
    "year, data, log = sys.argv[1:4]\n"
    "text = pathlib.Path(data, year + '.txt').read_text()\n"
    "open(log, 'a').write(f'produce {year}\\n')\n"
    "if text == 'bad': sys.exit(3)\n"
    "o = pathlib.Path('/work/outputs'); o.mkdir()\n"
    "(o / 'hash').write_text(hashlib.sha256(text.encode()).hexdigest())\n"
    "d = pathlib.Path('/work/out'); d.mkdir()\n"
    "(d / 'data.txt').write_text(text)\n"
)
# Logs what it was given and outputs it as `seen`.
CHECK = (
    "import pathlib, sys\n"
    "year, log = sys.argv[1:3]\n"
    "text = pathlib.Path('/work/in/data.txt').read_text()\n"
    "open(log, 'a').write(f'check {year} {text}\\n')\n"
    "o = pathlib.Path('/work/outputs'); o.mkdir()\n"
    "(o / 'seen').write_text(text)\n"
)


def _memoize(key: str, cache: str) -> dict:
    return {"key": key, "maxAge": "24h", "cache": {"configMap": {"name": cache}}}


PRODUCE_TEMPLATE = container(
    "produce",
    PRODUCE,
    ["{{inputs.parameters.year}}", "{{workflow.parameters.data}}", "{{workflow.parameters.log}}"],
    inputs={"parameters": [{"name": "year"}, {"name": "key"}]},
    outputs={
        "parameters": [{"name": "hash", "valueFrom": {"path": "/work/outputs/hash"}}],
        "artifacts": [{"name": "data", "path": "/work/out/data.txt"}],
    },
    memoize=_memoize("{{inputs.parameters.key}}-{{inputs.parameters.year}}", "produce-cache"),
)
# Its key holds what produce made of the year: new data is always checked.
CHECK_TEMPLATE = container(
    "check",
    CHECK,
    ["{{inputs.parameters.year}}", "{{workflow.parameters.log}}"],
    inputs={
        "parameters": [{"name": "year"}, {"name": "key"}, {"name": "hash"}],
        "artifacts": [{"name": "data", "path": "/work/in/data.txt"}],
    },
    outputs={"parameters": [{"name": "seen", "valueFrom": {"path": "/work/outputs/seen"}}]},
    memoize=_memoize(
        "{{inputs.parameters.key}}-{{inputs.parameters.year}}-{{inputs.parameters.hash}}",
        "check-cache",
    ),
)
# The dag's inputs, passed on to its tasks by name.
PASSED_ON = [{"name": n, "value": "{{inputs.parameters." + n + "}}"} for n in ("year", "key")]
YEAR_DAG = {
    "name": "year",
    "inputs": {"parameters": [{"name": "year"}, {"name": "key"}]},
    "dag": {
        "tasks": [
            {
                "name": "produce",
                "template": "produce",
                "arguments": {"parameters": PASSED_ON},
            },
            {
                "name": "check",
                "template": "check",
                "depends": "produce",
                "arguments": {
                    "parameters": [
                        *PASSED_ON,
                        {"name": "hash", "value": "{{tasks.produce.outputs.parameters.hash}}"},
                    ],
                    "artifacts": [
                        {"name": "data", "from": "{{tasks.produce.outputs.artifacts.data}}"}
                    ],
                },
            },
        ]
    },
}


YEAR_TASK = {
    "name": "years",
    "template": "year",
    "arguments": {
        "parameters": [{"name": "year", "value": "{{item}}"}, {"name": "key", "value": "k"}]
    },
}


def years(items: list[str], parallelism: int | None = None) -> dict:
    """One `year` DAG per item (withItems): produce, then check, of each."""
    task = {**YEAR_TASK, "withItems": items}
    templates = [copy.deepcopy(t) for t in (YEAR_DAG, PRODUCE_TEMPLATE, CHECK_TEMPLATE)]
    template = workflow([task], templates, {"data": "unset", "log": "unset"})
    if parallelism is not None:
        template["spec"]["templates"][0]["parallelism"] = parallelism
    return template


def _write(data: Path, **years: str) -> dict[str, str]:
    data.mkdir(exist_ok=True)
    for year, text in years.items():
        (data / f"{year[1:]}.txt").write_text(text)
    return {"data": str(data)}


def _items(summary: dict) -> dict[str, dict]:
    return summary["tasks"]["years"]["children"]


def test_each_item_runs_its_dags_tasks_in_order_named_and_recorded_as_argo_names_them(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    params = {**_write(tmp_path / "data", y2022="a", y2023="b"), "log": str(log)}
    code, text, summary = run(years(["2022", "2023"], parallelism=1), tmp_path, params)
    assert code == 0, text
    assert log.read_text().splitlines() == [
        "produce 2022", "check 2022 a", "produce 2023", "check 2023 b"
    ]  # fmt: skip
    items = _items(summary)
    assert list(items) == ["years(0:2022)", "years(1:2023)"]
    # A dag node records its tasks by name; their nodes are `<dag node>.<task>` (dag.go
    # taskNodeName), their files under <run dir>/years/<index>/<task>/.
    assert list(items["years(0:2022)"]["tasks"]) == ["produce", "check"]
    check = items["years(1:2023)"]["tasks"]["check"]
    assert check["outputs"]["parameters"] == {"seen": "b"}
    assert check["memoization"]["key"] == "k-2023-" + hashlib.sha256(b"b").hexdigest()
    assert re.search(r"^  years\(1:2023\)\.check\s+Succeeded", text, re.M)
    run_dir = next(p for p in tmp_path.iterdir() if p.name.startswith("run-"))
    assert (run_dir / "years" / "1" / "check" / "stdout.log").is_file()
    assert "2 item(s), 0 from the memoization cache" in text


def test_a_dag_whose_first_task_is_cached_checks_new_data_under_a_key_of_its_outputs(
    tmp_path: Path,
) -> None:
    """check's key holds produce's output hash: produced anew from changed data (its own entry
    deleted, as a user invalidates one year), the year is checked again, never taken from the
    entry of the data before; unchanged, both come from the cache."""
    log, cache = tmp_path / "log", tmp_path / "cache"
    params = {**_write(tmp_path / "data", y2022="a", y2023="b"), "log": str(log)}
    assert run(years(["2022", "2023"]), tmp_path, params, cache_dir=cache)[0] == 0
    produce_cache = cache / "memoize" / "produce-cache.json"
    entries = json.loads(produce_cache.read_text())
    del entries["k-2023"]
    produce_cache.write_text(json.dumps(entries))
    _write(tmp_path / "data", y2023="b, corrected")
    log.write_text("")
    code, text, summary = run(years(["2022", "2023"]), tmp_path, params, cache_dir=cache)
    assert code == 0, text
    assert log.read_text().splitlines() == ["produce 2023", "check 2023 b, corrected"]
    items = _items(summary)
    hits = {
        node: {task: result["memoization"]["hit"] for task, result in item["tasks"].items()}
        for node, item in items.items()
    }
    assert hits == {"years(0:2022)": {"produce": True, "check": True},
                    "years(1:2023)": {"produce": False, "check": False}}  # fmt: skip
    assert items["years(1:2023)"]["tasks"]["check"]["outputs"]["parameters"]["seen"] == (
        "b, corrected"
    )
    assert "2 item(s), 1 from the memoization cache" in text
    assert re.search(r"years\(0:2022\)\s+Succeeded .* 2 task\(s\), 2 from the memoization", text)
    # One entry per data the year had: the old one stays until it expires (maxAge), unused.
    assert sorted(LocalCache(cache).entries("check-cache")) == sorted(
        f"k-{y}-{hashlib.sha256(t.encode()).hexdigest()}"
        for y, t in (("2022", "a"), ("2023", "b"), ("2023", "b, corrected"))
    )


def test_a_failed_task_in_an_item_fails_the_run_by_its_node_and_starts_no_further_item(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    params = {**_write(tmp_path / "data", y2022="a", y2023="bad", y2024="c"), "log": str(log)}
    err = io.StringIO()
    code, _, summary = run(
        years(["2022", "2023", "2024"], parallelism=1), tmp_path, params, err=err
    )
    assert code == 1
    text = err.getvalue()
    assert text.startswith("error: task 'years(1:2023).produce' failed: exit code 3"), text
    assert re.search(r"logs in \S+/years/1/produce$", text, re.M), text
    assert log.read_text().splitlines() == ["produce 2022", "check 2022 a", "produce 2023"]
    items = _items(summary)
    assert items["years(1:2023)"]["phase"] == "Failed"
    assert items["years(1:2023)"]["tasks"]["check"]["phase"] == "Pending"
    assert items["years(2:2024)"]["phase"] == "Pending"  # failFast: never started


@pytest.mark.parametrize(("bound", "total"), [(1, 3), (2, 4)])
def test_items_of_a_loop_of_dags_run_at_once_never_more_than_the_parallelism(
    bound: int, total: int, tmp_path: Path
) -> None:
    """Argo's DAG `parallelism` counts the active children of the loop's DAG: the items' dag
    nodes (v4.1.2 workflow/controller/node_counters.go, getActiveChildrenCounter); each runs its
    tasks one after another."""
    counter = tmp_path / "counter.json"
    probe = container("probe", _max_running_probe(bound, total, counter),
                      inputs={"parameters": [{"name": "i"}]})  # fmt: skip
    inner = {"name": "one", "inputs": {"parameters": [{"name": "i"}]},
             "dag": {"tasks": [{"name": "probe", "template": "probe", "arguments": {
                 "parameters": [{"name": "i", "value": "{{inputs.parameters.i}}"}]}}]}}  # fmt: skip
    task = {"name": "all", "template": "one", "withItems": list(range(total)),
            "arguments": {"parameters": [{"name": "i", "value": "{{item}}"}]}}  # fmt: skip
    template = workflow([task], [inner, probe])
    template["spec"]["templates"][0]["parallelism"] = bound
    code, text, _ = run(template, tmp_path)
    assert code == 0, text
    assert json.loads(counter.read_text()) == {"run": 0, "done": total, "max": bound}


def test_a_cached_artifact_deleted_since_fails_its_consumer_by_name(tmp_path: Path) -> None:
    """Argo takes a memoized node's outputs as they were saved, whether or not the artifacts
    they name still exist (v4.1.2 workflow/controller/cache/cache.go `Entry.Hit`; operator.go
    executeTemplate): the node that needs the artifact fails, naming it."""
    log, cache = tmp_path / "log", tmp_path / "cache"
    params = {**_write(tmp_path / "data", y2022="a"), "log": str(log)}
    assert run(years(["2022"]), tmp_path, params, cache_dir=cache)[0] == 0
    (cache / "memoize" / "check-cache.json").unlink()
    stored = LocalCache(cache).entries("produce-cache")["k-2022"]["outputs"]["artifacts"]
    (cache / "artifacts" / stored[0]["s3"]["key"]).unlink()
    code, text, _ = run(years(["2022"]), tmp_path, params, cache_dir=cache)
    assert code == 1
    assert re.search(r"years\(0:2022\)\.check: artifact data of produce is no longer at", text)


def _nested(change) -> dict:
    template = years(["2022"])
    change(template["spec"]["templates"][1])
    return template


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda t: t["dag"]["tasks"][0].update(withItems=["a"]), "withItems in a nested dag"),
        (lambda t: t["dag"].update(failFast=False), "dag of year: failFast False"),
        (lambda t: t.update(memoize=_memoize("k", "c")), "template year: memoize"),
        (lambda t: t.update(retryStrategy={"limit": 1}), "template year: retryStrategy"),
        (
            lambda t: t.update(outputs={"parameters": [{"name": "h", "value": "x"}]}),
            "template year: outputs",
        ),
        (
            lambda t: t["inputs"].update(
                artifacts=[{"name": "a", "path": "/work/a", "optional": True}]
            ),
            "template year.inputs: artifacts",
        ),
        (
            lambda t: t["dag"]["tasks"].append(
                {
                    "name": "again",
                    "template": "year",
                    "arguments": t["dag"]["tasks"][0]["arguments"],
                }
            ),
            "template year: it calls itself (main -> year -> year)",
        ),
    ],
)
def test_what_a_nested_dag_may_not_hold_is_refused_by_name_before_anything_runs(
    tmp_path: Path, change, named: str
) -> None:
    with pytest.raises(LocalRunError, match=re.escape(named)):
        run_rendered(_nested(change), {}, run_dir=tmp_path / "run", lock_file=tmp_path / "lock")
    assert not (tmp_path / "run").exists()


def _named(template: dict, name: str) -> dict:
    return next(t for t in template["spec"]["templates"] if t["name"] == name)


@pytest.mark.parametrize(
    ("breakage", "said"),
    [
        # a memo key made bad by the nested dag's own input (`{{inputs.parameters.key}}`)
        (lambda t: _named(t, "produce")["memoize"].update(key="{{inputs.parameters.key}}!"),
         "task years(0:2022).produce: memoize: invalid cache key"),
        # a program that cannot start, in a task of the nested dag
        (lambda t: _named(t, "check")["container"].update(command=[], args=[]),
         "task years(0:2022).check: the container has no command and no args"),
    ],
)  # fmt: skip
def test_what_a_nested_dags_task_cannot_run_is_refused_before_any_task(
    tmp_path: Path, breakage, said: str
) -> None:
    """The up-front checks reach into nested dags, with their inputs where known (before: the
    first year's produce ran, then the run failed)."""
    log = tmp_path / "log"
    template = years(["2022", "2023"])
    breakage(template)
    params = {**_write(tmp_path / "data", y2022="a", y2023="b"), "log": str(log)}
    with pytest.raises(LocalRunError) as info:
        run(template, tmp_path, params)
    assert info.value.exit_code == 2
    assert said in str(info.value), info.value
    assert not log.exists()


@pytest.mark.parametrize("content", ["not json", "[1]", '"x"', "5"])
@pytest.mark.parametrize("cache_name", ["produce-cache", "check-cache"])
def test_a_nested_templates_memoization_cache_that_is_no_object_is_refused_before_any_task(
    tmp_path: Path, content: str, cache_name: str
) -> None:
    """issue 11: the up-front check looked only at top-level tasks, so a bad cache file of a
    template inside the per-year dags failed mid-run (an AttributeError for `[1]`, `"x"`, `5`).
    Exit 1, as for a top-level one (test_local_runner_upfront.py): the cache's state, not an
    argument."""
    log, cache = tmp_path / "log", tmp_path / "cache"
    (cache / "memoize").mkdir(parents=True)
    (cache / "memoize" / f"{cache_name}.json").write_text(content)
    params = {**_write(tmp_path / "data", y2022="a", y2023="b"), "log": str(log)}
    run_dir = tmp_path / "run"
    with pytest.raises(LocalRunError, match=f"memoization cache .*{cache_name}.json") as info:
        run_rendered(
            years(["2022", "2023"]), params, run_dir=run_dir, cache_dir=cache,
            lock_file=tmp_path / "lock", out=io.StringIO(),
        )  # fmt: skip
    assert info.value.exit_code == 1
    assert not log.exists()
    assert not run_dir.exists()
