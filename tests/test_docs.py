"""The documents say what is true: `make help` lists every target, cross-references point at
sections that exist, code snippets define what they use, and retry claims match the templates."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from workflows.pipeline import render
from workflows.settings import PipelineSettings

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_RULE = re.compile(r"^([A-Za-z0-9_-]+):(?!=)", re.MULTILINE)
_HELP_LINE = re.compile(r"^\s+(?:\x1b\[\d+m)?([A-Za-z0-9_-]+)", re.MULTILINE)
# `see README, "Images"`, `README "Failure behaviour"`: a named section of the README.
_README_SECTION = re.compile(r'README,? "([^"]+)"')
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {name for name in _RULE.findall(text) if name not in {"ifdef", "endif"}}


def test_make_help_lists_every_target() -> None:
    out = subprocess.run(
        ["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    listed = set(_HELP_LINE.findall(out))
    assert _makefile_targets() - listed == set(), out
    assert "lock" in listed


def _text_files() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return [REPO / name for name in tracked if not name.endswith((".lock", ".csv", ".op"))]


def test_every_readme_section_named_elsewhere_exists() -> None:
    headings = set(re.findall(r"^#+ (.+)$", (REPO / "README.md").read_text(), re.MULTILINE))
    named = {}
    for path in _text_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for section in _README_SECTION.findall(text):
            named.setdefault(section, path.relative_to(REPO).as_posix())
    assert "Dependencies" in named  # pyproject.toml's pointer, the one that was broken
    missing = {section: where for section, where in named.items() if section not in headings}
    assert missing == {}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_snippets_define_every_name_they_use(doc: Path, tmp_path: Path) -> None:
    """Each ```python block alone passes ruff's undefined-name check (F821)."""
    for i, block in enumerate(_PYTHON_BLOCK.findall(doc.read_text())):
        snippet = tmp_path / f"{doc.stem}_{i}.py"
        snippet.write_text(block)
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated",
             "--select", "F821,F822,F823", str(snippet)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{doc.name} block {i}:\n{block}\n{result.stdout}"


def test_retried_templates_are_the_ones_docs_steps_names() -> None:
    text = (REPO / "docs" / "steps.md").read_text()
    match = re.search(r"\*\*Argo retries: ([a-z, -]+)\*\*", text)
    assert match, "docs/steps.md no longer says which templates Argo retries"
    documented = {name.strip() for name in match.group(1).split(",")}
    template = render(PipelineSettings())["workflow-template"]
    retried = {
        t["name"] for t in template["spec"]["templates"] if t.get("retryStrategy") is not None
    }
    assert documented == retried
    # "(3 retries, backoff 30 s doubling ...)"
    numbers = re.search(r"\*\*\s+\((\d+) retries, backoff\s+(\d+) s doubling", text)
    assert numbers, "docs/steps.md no longer gives the retry limit and backoff"
    for t in template["spec"]["templates"]:
        if t["name"] in retried:
            strategy = t["retryStrategy"]
            assert int(strategy["limit"]) == int(numbers.group(1))
            assert strategy["backoff"]["duration"] == f"{numbers.group(2)}s"
            assert int(strategy["backoff"]["factor"]) == 2
            # Only transient failures: the expression docs/steps.md ("Exit codes") gives.
            assert f"`{strategy['expression']}`" in " ".join(text.split())


# "`make bench-scale` (`python benchmarks/bench_scale.py --scales 1,4,16 --rounds 3`)"
_BENCH_COMMAND = re.compile(r"`make ([\w-]+)` \(`python (benchmarks/[^`]+)`\)")


def test_each_benchmark_command_in_the_readme_is_what_its_make_target_runs() -> None:
    pairs = _BENCH_COMMAND.findall((REPO / "README.md").read_text())
    assert {target for target, _ in pairs} >= {"bench-scale", "bench-demo"}
    for target, command in pairs:
        recipe = subprocess.run(
            ["make", "-s", "-n", target], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        script, *documented = shlex.split(command)
        (line,) = [line for line in recipe.splitlines() if script in line]
        words = shlex.split(line)
        ran = words[words.index(script) + 1 :]
        # Every documented flag with its value, in the recipe as written (others may follow).
        assert documented == ran[: len(documented)], (target, documented, ran)
