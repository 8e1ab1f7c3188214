"""Image sizes: our step/mlflow/serve images against what `mlflow models build-docker` would build.

`build-docker` needs a registry base (python:<ver>-slim), so its generated Dockerfile is built here
on our base image instead. Usage: `python benchmarks/bench_image_sizes.py` after `make images`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ESTIMATE_TAG = "dewpoint-pipeline/build-docker-estimate:latest"
# Stands in for python:<ver>-slim, whose pip installs into a writable system site-packages (as
# root, keeping pip's cache in /root/.cache/pip, as the generated Dockerfile does there).
PYTHON_SLIM_STAND_IN = """FROM {base}
RUN python3 -m venv /usr/local/slim-python
ENV PATH=/usr/local/slim-python/bin:$PATH
"""


def docker_program() -> str:
    """$DOCKER or `docker`."""
    return os.environ.get("DOCKER") or "docker"


def image_size(tag: str) -> int:
    """Uncompressed size of an image in bytes (what `docker image ls` shows)."""
    out = subprocess.run(
        [docker_program(), "image", "inspect", "--format", "{{.Size}}", tag],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def train_model(work: Path) -> tuple[str, str]:
    """Fetch synthetic data and run the real train step into a private sqlite store.

    Returns:
        `(tracking_uri, model_uri)` of the logged model.
    """
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    steps = [sys.executable, "-m", "steps"]
    subprocess.run(
        [*steps, "fetch", "--source", "synthetic", "--rows", "2000",
         "--output", str(work / "dataset.parquet")],
        check=True, env=env, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    # Validate's job, reduced to what train needs: rows with both temperatures.
    import pandas as pd

    data = pd.read_parquet(work / "dataset.parquet").dropna(subset=["temp", "dewp"])
    data.to_parquet(work / "validated.parquet")
    out = subprocess.run(
        [*steps, "train", "--input", str(work / "validated.parquet"),
         "--holdout-out", str(work / "holdout.parquet"), "--plot-out", str(work / "fit.png")],
        check=True, env=env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    return tracking, json.loads(out.stdout.strip().splitlines()[-1])["model-uri"]


def build_docker_estimate(work: Path, base: str, ca_bundle: str | None) -> int:
    """Build MLflow's generated serving Dockerfile for our model on `base`; return its size."""
    tracking, model_uri = train_model(work)
    context = work / "context"
    subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "models", "generate-dockerfile",
         "-m", model_uri, "--output-directory", str(context)],
        check=True, env={**os.environ, "MLFLOW_TRACKING_URI": tracking}, capture_output=True,
    )  # fmt: skip
    generated = (context / "Dockerfile").read_text().splitlines()
    lines = []
    for line in generated:
        if line.startswith("FROM "):
            lines.append(PYTHON_SLIM_STAND_IN.format(base=base))
        elif line.startswith(("RUN pip ", "RUN python ")):
            # Same command; only the proxy CA is handed to pip as a build secret.
            lines.append(
                "RUN --mount=type=secret,id=pipca "
                "if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; "
                + line.removeprefix("RUN ")
            )
        else:
            lines.append(line)
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    secret = ["--secret", f"id=pipca,src={ca_bundle}"] if ca_bundle else []
    subprocess.run(
        [docker_program(), "build", "--network", "host", *secret, "-t", ESTIMATE_TAG, str(context)],
        check=True, env={**os.environ, "DOCKER_BUILDKIT": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    return image_size(ESTIMATE_TAG)


def main(argv: list[str] | None = None) -> int:
    """Print each image's size, its size above the base, and the ratio to build-docker's."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--base", default="local/python-base:trixie", help="base image")
    parser.add_argument(
        "--ca-bundle",
        default="/etc/ssl/certs/ca-certificates.crt",
        help="CA bundle for pip (BuildKit secret pipca); empty for none",
    )
    args = parser.parse_args(argv)
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    ca = args.ca_bundle if args.ca_bundle and Path(args.ca_bundle).is_file() else None

    base = image_size(args.base)
    sizes = {kind: image_size(f"dewpoint-pipeline/{kind}:{version}") for kind in
             ("step", "mlflow", "serve")}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-image-sizes-") as tmp:
        sizes["build-docker (estimate)"] = build_docker_estimate(Path(tmp), args.base, ca)

    mb = 1_000_000
    print(f"base {args.base}: {base / mb:.0f} MB")
    print(f"{'image':<26}{'size MB':>9}{'above base MB':>15}")
    for name, size in sizes.items():
        print(f"{name:<26}{size / mb:>9.0f}{(size - base) / mb:>15.0f}")
    serve, estimate = sizes["serve"] - base, sizes["build-docker (estimate)"] - base
    print(f"serve image adds {serve / estimate:.2f}x of what build-docker's image adds to the base")
    return 0


if __name__ == "__main__":
    sys.exit(main())
