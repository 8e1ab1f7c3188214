"""Settings shared by the MLflow-facing steps, read from flags then env."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from steps.cli import StepError, env_default

DEFAULT_MODEL_NAME = "dewpoint-lr"
DEFAULT_EXPERIMENT = "dewpoint"


@dataclass(frozen=True)
class MlflowSettings:
    """Where MLflow lives and what the model is called there."""

    tracking_uri: str
    model_name: str = DEFAULT_MODEL_NAME
    experiment: str = DEFAULT_EXPERIMENT

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add --tracking-uri, --model-name and --experiment with env fallbacks."""
        parser.add_argument(
            "--tracking-uri",
            default=env_default("MLFLOW_TRACKING_URI"),
            help="MLflow tracking server URI (env MLFLOW_TRACKING_URI)",
        )
        parser.add_argument(
            "--model-name",
            default=env_default("MODEL_NAME", DEFAULT_MODEL_NAME),
            help=f"registered model name (env MODEL_NAME, default {DEFAULT_MODEL_NAME})",
        )
        parser.add_argument(
            "--experiment",
            default=env_default("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT),
            help=f"MLflow experiment (env MLFLOW_EXPERIMENT_NAME, default {DEFAULT_EXPERIMENT})",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MlflowSettings:
        """Build settings from parsed flags; a missing tracking URI is a user error."""
        if not args.tracking_uri:
            raise StepError(
                "no MLflow tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI"
            )
        return cls(args.tracking_uri, args.model_name, args.experiment)
