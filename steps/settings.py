"""Settings shared by the MLflow-facing steps, from flags then env (declared in steps/stages.py)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from steps.cli import BadInput
from steps.mlflow_env import check_mlflow_environment

DEFAULT_MODEL_NAME = "dewpoint-lr"
DEFAULT_EXPERIMENT = "dewpoint"


@dataclass(frozen=True)
class MlflowSettings:
    """Where MLflow lives and what the model is called there."""

    tracking_uri: str
    model_name: str = DEFAULT_MODEL_NAME
    experiment: str = DEFAULT_EXPERIMENT

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MlflowSettings:
        """Build settings from parsed flags (`Stage.parse`); no tracking URI, or an environment
        MLflow's client would fail on at its first request (`check_mlflow_environment`), is a
        BadInput: before the step does any work."""
        if not args.tracking_uri:
            raise BadInput("no MLflow tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI")
        check_mlflow_environment(os.environ)
        return cls(
            args.tracking_uri,
            getattr(args, "model_name", DEFAULT_MODEL_NAME),
            getattr(args, "experiment", DEFAULT_EXPERIMENT),
        )
