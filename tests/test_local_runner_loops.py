"""The local runner's loops, memoization and key-only artifacts, as Argo v4.1.2 has them, on small
hand-written templates (workflows/argo_rules.py cites the Argo sources for each rule)."""

from __future__ import annotations

import copy
import io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from steps.processes import exclusive_lock
from tests.test_local_runner import container, run, workflow
from workflows.argo_rules import aggregate_outputs
from workflows.local_runner import LocalRunError, run_rendered
from workflows.local_runner import cache as cache_module
from workflows.local_runner.cache import LocalCache

# Prints its argv as a JSON list; items fan out over it.
EMIT = "import json, pathlib, sys; o = pathlib.Path('/work/outputs'); o.mkdir(); " \
       "(o / 'items').write_text(sys.argv[1])"  # fmt: skip
EMIT_TEMPLATE = container(
    "emit",
    EMIT,
    ["{{inputs.parameters.items}}"],
    inputs={"parameters": [{"name": "items"}]},
    outputs={"parameters": [{"name": "items", "valueFrom": {"path": "/work/outputs/items"}}]},
)
# One item: appends its name to the log, writes its outputs (a string and a JSON object).
WORK = (
    "import json, pathlib, sys\n"
    "year, log = sys.argv[1], sys.argv[2]\n"
    "open(log, 'a').write(year + '\\n')\n"
    "if year == 'bad': sys.exit(3)\n"
    "o = pathlib.Path('/work/outputs'); o.mkdir()\n"
    "(o / 'name').write_text('y' + year)\n"
    "(o / 'summary').write_text(json.dumps({'year': year, 'n': len(year)}))\n"
    "d = pathlib.Path('/work/out'); d.mkdir()\n"
    "(d / 'data.txt').write_text('data of ' + year)\n"
)
WORK_TEMPLATE = container(
    "work",
    WORK,
    ["{{inputs.parameters.year}}", "{{workflow.parameters.log}}"],
    inputs={"parameters": [{"name": "year"}, {"name": "key"}]},
    outputs={
        "parameters": [
            {"name": "name", "valueFrom": {"path": "/work/outputs/name"}},
            {"name": "summary", "valueFrom": {"path": "/work/outputs/summary"}},
        ],
        "artifacts": [
            {"name": "data", "path": "/work/out/data.txt", "archive": {"none": {}},
             "s3": {"key": "years/{{inputs.parameters.key}}/{{inputs.parameters.year}}.txt"}}
        ],
    },
)  # fmt: skip
# Reads every object under the prefix (a directory) and the aggregated outputs.
GATHER = (
    "import json, pathlib, sys\n"
    "o = pathlib.Path('/work/outputs'); o.mkdir()\n"
    "files = sorted(p.name + '=' + p.read_text() for p in pathlib.Path('/work/in/all').iterdir())\n"
    "(o / 'files').write_text(json.dumps(files))\n"
    "(o / 'names').write_text(sys.argv[1])\n"
    "(o / 'summaries').write_text(sys.argv[2])\n"
    "(o / 'all').write_text(sys.argv[3])\n"
)
GATHER_TEMPLATE = container(
    "gather",
    GATHER,
    ["{{inputs.parameters.names}}", "{{inputs.parameters.summaries}}", "{{inputs.parameters.all}}"],
    inputs={
        "parameters": [{"name": "names"}, {"name": "summaries"}, {"name": "all"}],
        "artifacts": [{"name": "all", "path": "/work/in/all", "s3": {"key": "years/k"}}],
    },
    outputs={
        "parameters": [
            {"name": n, "valueFrom": {"path": f"/work/outputs/{n}"}}
            for n in ("files", "names", "summaries", "all")
        ]
    },
)


def fan_out(
    items: str, parallelism: int | None = None, memoize: dict | None = None, key: str = "k"
) -> dict:
    """emit(items) -> work per item (withParam) -> gather of the aggregated outputs."""
    work = copy.deepcopy(WORK_TEMPLATE)
    if memoize is not None:
        work["memoize"] = memoize
    tasks = [
        {
            "name": "emit",
            "template": "emit",
            "arguments": {"parameters": [{"name": "items", "value": items}]},
        },
        {
            "name": "work",
            "template": "work",
            "depends": "emit",
            "withParam": "{{tasks.emit.outputs.parameters.items}}",
            "arguments": {
                "parameters": [{"name": "year", "value": "{{item}}"}, {"name": "key", "value": key}]
            },
        },
        {
            "name": "gather",
            "template": "gather",
            "depends": "work",
            "arguments": {
                "parameters": [
                    {"name": "names", "value": "{{tasks.work.outputs.parameters.name}}"},
                    {"name": "summaries", "value": "{{tasks.work.outputs.parameters.summary}}"},
                    {"name": "all", "value": "{{tasks.work.outputs.parameters}}"},
                ]
            },
        },
    ]
    template = workflow(tasks, [EMIT_TEMPLATE, work, GATHER_TEMPLATE], {"log": "unset"})
    if parallelism is not None:
        template["spec"]["templates"][0]["parallelism"] = parallelism
    return template


def test_with_param_runs_one_node_per_item_and_aggregates_their_outputs_as_argo(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    code, text, summary = run(
        fan_out('["2022", "2023", "2024"]'), tmp_path, {"log": str(log)}, cache_dir=tmp_path / "c"
    )
    assert code == 0, text
    assert sorted(log.read_text().split()) == ["2022", "2023", "2024"]
    work = summary["tasks"]["work"]
    assert list(work["children"]) == ["work(0:2022)", "work(1:2023)", "work(2:2024)"]
    gathered = summary["tasks"]["gather"]["outputs"]["parameters"]
    # A list of the items' values in loop order; JSON objects are embedded, not quoted.
    assert gathered["names"] == '["y2022","y2023","y2024"]'
    assert json.loads(gathered["summaries"]) == [
        {"year": "2022", "n": 4}, {"year": "2023", "n": 4}, {"year": "2024", "n": 4}
    ]  # fmt: skip
    assert json.loads(gathered["all"])[0] == {
        "name": "y2022",
        "summary": '{"year": "2022", "n": 4}',
    }
    children = [c["outputs"]["parameters"] for c in work["children"].values()]
    assert gathered["names"] == aggregate_outputs(children)["parameters.name"]
    # Each item uploaded its key-only artifact; the consumer loaded the prefix as a directory.
    assert json.loads(gathered["files"]) == [f"{y}.txt=data of {y}" for y in (2022, 2023, 2024)]


def test_an_empty_list_skips_the_task_a_bare_depends_runs_and_its_outputs_have_no_value(
    tmp_path: Path,
) -> None:
    """With no items Argo sets no aggregated output (processAggregateNodeOutputs returns early):
    a task naming them fails to resolve them."""
    template = fan_out("[]")
    after = {"name": "after", "template": "emit", "depends": "work",
             "arguments": {"parameters": [{"name": "items", "value": "x"}]}}  # fmt: skip
    template["spec"]["templates"][0]["dag"]["tasks"].insert(2, after)
    code, text, summary = run(template, tmp_path, {"log": str(tmp_path / "log")})
    assert summary["tasks"]["work"]["phase"] == "Skipped"
    assert summary["tasks"]["after"]["phase"] == "Succeeded"
    assert code == 1
    assert "{{tasks.work.outputs.parameters.name}} has no value" in text


@pytest.mark.parametrize("items", ['"2024"', "{not json", '{"a": 1}'])
def test_a_with_param_value_that_is_not_a_json_list_fails_the_task_by_name(
    items: str, tmp_path: Path
) -> None:
    code, text, _ = run(fan_out(json.dumps(items)[1:-1]), tmp_path, {"log": str(tmp_path / "l")})
    assert code == 1
    assert "withParam value could not be parsed as a JSON list" in text


def _max_running_probe(bound: int, total: int, counter: Path) -> str:
    """Code for one item: count itself in while it runs, record the most seen at once, and wait
    (up to a minute) until as many as could run together are there, so the count is exact."""
    return (
        "import fcntl, json, pathlib, sys, time\n"
        f"c = pathlib.Path({str(counter)!r})\n"
        "def change(d_run, d_done):\n"
        "    with open(str(c) + '.lock', 'a') as l:\n"
        "        fcntl.flock(l, fcntl.LOCK_EX)\n"
        "        s = json.loads(c.read_text()) if c.exists() else {'run': 0, 'done': 0, 'max': 0}\n"
        "        s['run'] += d_run; s['done'] += d_done; s['max'] = max(s['max'], s['run'])\n"
        "        c.write_text(json.dumps(s)); return s\n"
        "change(1, 0)\n"
        "deadline = time.time() + 60\n"
        "while time.time() < deadline:\n"
        "    s = change(0, 0)\n"
        f"    if s['run'] >= min({bound}, {total} - s['done']): break\n"
        "    time.sleep(0.05)\n"
        "change(-1, 1)\n"
    )


@pytest.mark.parametrize(("bound", "total"), [(1, 3), (2, 5), (3, 3)])
def test_items_run_in_parallel_processes_never_more_than_the_parallelism(
    bound: int, total: int, tmp_path: Path
) -> None:
    counter = tmp_path / "counter.json"
    probe = container("probe", _max_running_probe(bound, total, counter),
                      inputs={"parameters": [{"name": "i"}]})  # fmt: skip
    task = {"name": "probe", "template": "probe", "withItems": list(range(total)),
            "arguments": {"parameters": [{"name": "i", "value": "{{item}}"}]}}  # fmt: skip
    template = workflow([task], [probe])
    template["spec"]["templates"][0]["parallelism"] = bound
    code, text, _ = run(template, tmp_path)
    assert code == 0, text
    assert json.loads(counter.read_text()) == {"run": 0, "done": total, "max": bound}
    assert f"parallelism {bound}" in text


def test_spec_parallelism_bounds_too_and_the_smaller_bound_wins(tmp_path: Path) -> None:
    counter = tmp_path / "counter.json"
    probe = container("probe", _max_running_probe(1, 3, counter),
                      inputs={"parameters": [{"name": "i"}]})  # fmt: skip
    task = {"name": "probe", "template": "probe", "withItems": ["a", "b", "c"],
            "arguments": {"parameters": [{"name": "i", "value": "{{item}}"}]}}  # fmt: skip
    template = workflow([task], [probe])
    template["spec"]["parallelism"] = 1
    template["spec"]["templates"][0]["parallelism"] = 3
    code, text, _ = run(template, tmp_path)
    assert code == 0, text
    assert json.loads(counter.read_text())["max"] == 1


def test_a_failed_item_fails_the_run_by_its_node_name_and_starts_no_further_item(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    template = fan_out('["2022", "bad", "2024"]', parallelism=1)
    err = io.StringIO()
    code, _, summary = run(template, tmp_path, {"log": str(log)}, err=err)
    assert code == 1
    assert err.getvalue().startswith("error: task 'work(1:bad)' failed: exit code 3")
    assert log.read_text().split() == ["2022", "bad"]  # failFast: 2024 never started
    assert summary["tasks"]["work"]["phase"] == "Failed"
    assert summary["tasks"]["work"]["children"]["work(2:2024)"]["phase"] == "Pending"
    assert summary["tasks"]["gather"]["phase"] == "Pending"


def test_map_items_give_item_keys_and_argo_node_names(tmp_path: Path) -> None:
    echo = container(
        "echo",
        "import pathlib, sys; o = pathlib.Path('/work/outputs'); o.mkdir(); "
        "(o / 'v').write_text(sys.argv[1] + '|' + sys.argv[2])",
        ["{{inputs.parameters.a}}", "{{inputs.parameters.whole}}"],
        inputs={"parameters": [{"name": "a"}, {"name": "whole"}]},
        outputs={"parameters": [{"name": "v", "valueFrom": {"path": "/work/outputs/v"}}]},
    )
    task = {
        "name": "echo",
        "template": "echo",
        "withItems": [{"year": 2024, "key": "k(1)"}, {"year": 2025, "key": "z"}],
        "arguments": {
            "parameters": [
                {"name": "a", "value": "{{item.year}}-{{item.key}}"},
                {"name": "whole", "value": "{{item}}"},
            ]
        },
    }
    code, text, summary = run(workflow([task], [echo]), tmp_path)
    assert code == 0, text
    children = summary["tasks"]["echo"]["children"]
    assert list(children) == ["echo(0:key:k1,year:2024)", "echo(1:key:z,year:2025)"]
    first = children["echo(0:key:k1,year:2024)"]["outputs"]["parameters"]["v"]
    assert first == '2024-k(1)|{"key":"k(1)","year":2024}'


MEMOIZE = {"key": "{{inputs.parameters.key}}-{{inputs.parameters.year}}", "maxAge": "24h",
           "cache": {"configMap": {"name": "years-cache"}}}  # fmt: skip


def test_memoized_items_are_taken_from_the_cache_on_a_rerun_with_their_artifacts(
    tmp_path: Path,
) -> None:
    log, cache = tmp_path / "log", tmp_path / "cache"
    first = run(fan_out('["2022", "2023"]', memoize=MEMOIZE), tmp_path, {"log": str(log)},
                cache_dir=cache)  # fmt: skip
    assert first[0] == 0, first[1]
    assert log.read_text().split() != []
    log.write_text("")
    # A rerun with one more year: only the new one runs; the others come from the cache.
    code, text, summary = run(fan_out('["2022", "2023", "2024"]', memoize=MEMOIZE), tmp_path,
                              {"log": str(log)}, cache_dir=cache)  # fmt: skip
    assert code == 0, text
    assert log.read_text().split() == ["2024"]
    children = summary["tasks"]["work"]["children"]
    assert [c["memoization"]["hit"] for c in children.values()] == [True, True, False]
    assert children["work(0:2022)"]["memoization"] == {
        "hit": True, "key": "k-2022", "cacheName": "years-cache"
    }  # fmt: skip
    assert re.search(r"work\(0:2022\)\s+Succeeded .* from cache years-cache", text)
    assert "3 item(s), 2 from the memoization cache" in text
    gathered = summary["tasks"]["gather"]["outputs"]["parameters"]
    assert gathered["names"] == '["y2022","y2023","y2024"]'  # cached outputs aggregate too
    assert json.loads(gathered["files"]) == [f"{y}.txt=data of {y}" for y in (2022, 2023, 2024)]
    entries = LocalCache(cache).entries("years-cache")
    assert sorted(entries) == ["k-2022", "k-2023", "k-2024"]
    assert entries["k-2022"]["outputs"]["artifacts"] == [
        {"name": "data", "s3": {"key": "years/k/2022.txt"}}
    ]


def test_an_entry_older_than_max_age_or_another_key_runs_again(tmp_path: Path) -> None:
    log, cache = tmp_path / "log", tmp_path / "cache"
    assert run(fan_out('["2022"]', memoize=MEMOIZE), tmp_path, {"log": str(log)},
               cache_dir=cache)[0] == 0  # fmt: skip
    path = cache / "memoize" / "years-cache.json"
    entries = json.loads(path.read_text())
    entries["k-2022"]["creationTimestamp"] = "2000-01-01T00:00:00Z"
    path.write_text(json.dumps(entries))
    log.write_text("")
    code, text, _ = run(fan_out('["2022"]', memoize=MEMOIZE), tmp_path, {"log": str(log)},
                        cache_dir=cache)  # fmt: skip
    assert code == 0, text
    assert log.read_text().split() == ["2022"]  # expired: ran again, and is cached anew
    assert json.loads(path.read_text())["k-2022"]["creationTimestamp"] > "2001"
    log.write_text("")
    code, text, _ = run(fan_out('["2022"]', memoize=MEMOIZE, key="other"), tmp_path,
                        {"log": str(log)}, cache_dir=cache)  # fmt: skip
    assert code == 0, text
    assert log.read_text().split() == ["2022"]


def test_a_cache_key_argo_would_refuse_fails_the_item_by_name(tmp_path: Path) -> None:
    template = fan_out('["2022"]', memoize=MEMOIZE, key="not_valid")
    code, text, _ = run(template, tmp_path, {"log": str(tmp_path / "l")})
    assert code == 1
    assert "invalid cache key: 'not_valid-2022'" in text


def test_a_missing_key_only_input_fails_the_task_naming_the_key(tmp_path: Path) -> None:
    key = {"key": "nothing/{{workflow.parameters.y}}"}
    reader = container(
        "reader", "pass", inputs={"artifacts": [{"name": "a", "path": "/work/in/a", "s3": key}]}
    )
    template = workflow([{"name": "reader", "template": "reader"}], [reader], {"y": "2024"})
    code, text, _ = run(template, tmp_path)
    assert code == 1
    assert "key 'nothing/2024' does not exist in the artifact repository" in text
    # A prefix whose objects were all deleted is no key either: S3 has no empty directories.
    cache = tmp_path / "cache"
    (cache / "artifacts" / "nothing" / "2024" / "emptied").mkdir(parents=True)
    code, text, _ = run(template, tmp_path, cache_dir=cache)
    assert code == 1
    assert "key 'nothing/2024' does not exist in the artifact repository" in text


def test_an_artifact_from_a_looping_task_is_refused_up_front(tmp_path: Path) -> None:
    template = fan_out('["2022"]')
    gather = template["spec"]["templates"][0]["dag"]["tasks"][2]
    gather["arguments"]["artifacts"] = [
        {"name": "all", "from": "{{tasks.work.outputs.artifacts.data}}"}
    ]
    with pytest.raises(LocalRunError, match="Argo aggregates the parameters of a loop's items"):
        run_rendered(template, {"log": "x"}, run_dir=tmp_path / "run", lock_file=tmp_path / "l")
    assert not (tmp_path / "run").exists()


def test_concurrent_cache_writers_lose_no_entry(tmp_path: Path) -> None:
    """Items ending at once each add their entry; the lock keeps one from writing back a file
    read before another's entry was in it."""
    cache = LocalCache(tmp_path)
    keys = [f"year-{i}" for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: cache.save_entry("years-cache", key, "node", {}), keys))
    assert sorted(cache.entries("years-cache")) == sorted(keys)


def test_a_cache_held_too_long_is_refused_naming_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "CACHE_LOCK_TIMEOUT_S", 0.3)
    lock = tmp_path / "memoize" / ".years-cache.lock"
    held = rf"\(pid {os.getpid()}\) holds .*years-cache"
    with (
        exclusive_lock(lock, 0, lambda _: None, what="test"),
        pytest.raises(LocalRunError, match=held),
    ):
        LocalCache(tmp_path).save_entry("years-cache", "year-1", "node", {})
    assert LocalCache(tmp_path).entries("years-cache") == {}
