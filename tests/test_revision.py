"""steps/revision.py: the commit and dirty flag of the running code, from env, git, or unknown."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from steps.revision import SourceRevision, source_revision


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git repository holding a `steps` package at its top, one commit."""
    repo = tmp_path / "repo"
    (repo / "steps").mkdir(parents=True)
    (repo / "steps" / "__init__.py").write_text("")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def test_environment_wins_as_in_the_images(checkout: Path) -> None:
    env = {"DEWPOINT_GIT_COMMIT": "f" * 40, "DEWPOINT_GIT_DIRTY": "true"}
    assert source_revision(env, checkout) == SourceRevision("f" * 40, True)
    assert source_revision({"DEWPOINT_GIT_COMMIT": "f" * 40}, checkout).dirty is None


def test_a_clean_then_dirty_checkout(checkout: Path) -> None:
    head = _git(checkout, "rev-parse", "HEAD")
    assert source_revision({}, checkout) == SourceRevision(head, False)
    (checkout / "steps" / "new.py").write_text("x = 1\n")  # untracked code counts
    assert source_revision({}, checkout) == SourceRevision(head, True)
    assert source_revision({}, checkout).tags() == {
        "code.git_commit": head,
        "code.git_dirty": "true",
    }


def test_ignored_files_do_not_make_it_dirty(checkout: Path) -> None:
    (checkout / ".gitignore").write_text(".demo/\n")
    _git(checkout, "add", ".gitignore")
    _git(checkout, "commit", "-q", "-m", "ignore")
    (checkout / ".demo").mkdir()
    (checkout / ".demo" / "run.json").write_text("{}")
    assert source_revision({}, checkout).dirty is False


def test_a_package_inside_someone_elses_repository_is_unknown(checkout: Path) -> None:
    """E.g. a wheel installed into a venv that sits inside an unrelated checkout."""
    site = checkout / "venv" / "site-packages"
    (site / "steps").mkdir(parents=True)
    assert source_revision({}, site) == SourceRevision("unknown", None)
    assert source_revision({}, site).tags()["code.git_dirty"] == "unknown"


def test_not_a_git_tree_is_unknown(tmp_path: Path) -> None:
    assert source_revision({}, tmp_path) == SourceRevision()


def test_this_checkout_is_known() -> None:
    revision = source_revision({})
    assert len(revision.commit) == 40 and revision.dirty in (True, False)


# ---- the images: `make images` labels them with the commit, the Dockerfile says where ----------

REPO = Path(__file__).resolve().parents[1]


def _image_build_args(checkout: Path) -> dict[str, str]:
    """The `--build-arg`s `make images` passes to docker build in `checkout` (dry run)."""
    text = subprocess.run(
        ["make", "-s", "-n", "-C", str(checkout), "-f", str(REPO / "Makefile"), "images"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    args = {}
    for word in text.replace("\\\n", " ").split("--build-arg ")[1:]:
        key, _, value = word.split()[0].partition("=")
        args[key] = value
    return args


def test_make_images_passes_the_checkouts_commit_and_dirty_flag(checkout: Path) -> None:
    """What the images' labels say (docker/Dockerfile, below) is this tree's commit and state, as
    steps.revision reads it for run and version tags: clean, then dirty with an untracked file."""
    (checkout / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "9.9.9"\n')
    _git(checkout, "add", ".")
    _git(checkout, "commit", "-q", "-m", "version")
    clean = source_revision({}, checkout)
    args = _image_build_args(checkout)
    assert (args["GIT_REVISION"], args["GIT_DIRTY"]) == (clean.commit, "false")
    assert args["VERSION"] == "9.9.9"
    (checkout / "notes.txt").write_text("not committed\n")
    args = _image_build_args(checkout)
    assert (args["GIT_REVISION"], args["GIT_DIRTY"]) == (clean.commit, "true")
    assert source_revision({}, checkout).dirty is True


@pytest.mark.parametrize("target", ["step", "mlflow", "serve"])
def test_each_image_labels_the_commit_and_dirty_flag_from_the_build_args(target: str) -> None:
    """docker/Dockerfile: every image target declares both build args and labels the image with
    them (OCI `org.opencontainers.image.revision`); the step image also hands them to its code
    (steps/revision.py reads DEWPOINT_GIT_COMMIT / DEWPOINT_GIT_DIRTY). The labels on built
    images: tests/test_images.py::test_image_labels_carry_version_and_revision (docker tier)."""
    stages = (REPO / "docker" / "Dockerfile").read_text().split("\nFROM ")
    (stage,) = [s for s in stages if s.split("\n", 1)[0].endswith(f" AS {target}")]
    assert "ARG GIT_REVISION=" in stage and "ARG GIT_DIRTY=" in stage
    assert 'org.opencontainers.image.revision="${GIT_REVISION}"' in stage
    assert 'dewpoint-pipeline.git-dirty="${GIT_DIRTY}"' in stage
    if target == "step":
        assert "DEWPOINT_GIT_COMMIT=${GIT_REVISION} DEWPOINT_GIT_DIRTY=${GIT_DIRTY}" in stage
