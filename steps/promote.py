"""promote: the gate. Move the `champion` alias to a new version only if it is not worse on holdout.

Write order (so an alias is never half-moved): score everything first; then set
`previous-champion` to the old champion; then `champion` to the new version; then the `gate.*` tags
(`gate.decision` last, so its presence means all of them were written). A failure before the first
write moves nothing. If an alias write fails, both aliases are put back to what they were before the
step; if the tracking server is gone for good between the two writes (the put-back fails too),
`champion` is still the old version and `previous-champion` names it as well, the error line says
so, and a retry of the step redoes the same writes.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steps.cli import StepError, add_outputs_dir, env_default, run, write_outputs
from steps.model import FEATURE, TARGET
from steps.settings import MlflowSettings
from steps.tracking import describe_mlflow_error, mlflow_session, one_line
from steps.train import read_training_frame

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
TAG_DECISION = "gate.decision"
TAG_REASON = "gate.reason"
TAG_NEW_RMSE = "gate.new_rmse"
TAG_CHAMPION_RMSE = "gate.champion_rmse"
TAG_CHAMPION_VERSION = "gate.champion_version"
TAG_TOLERANCE = "gate.tolerance"


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate. `champion_version` is the champion after the gate."""

    promoted: bool
    reason: str
    new_version: str
    new_rmse: float
    champion_rmse: float | None
    champion_version: str | None
    previous_champion: str | None

    def outputs(self) -> dict[str, Any]:
        """The step's output parameters (docs/steps.md)."""
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "new-rmse": repr(self.new_rmse),
            "champion-rmse": "none" if self.champion_rmse is None else repr(self.champion_rmse),
            "champion-version": self.champion_version or "none",
        }


def holdout_rmse(model_uri: str, holdout: pd.DataFrame) -> float:
    """Load `model_uri` as a pyfunc and return its RMSE (deg F) on the holdout rows."""
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(model_uri)
        predicted = np.asarray(model.predict(holdout[[FEATURE]]), dtype=np.float64).reshape(-1)
    except Exception as exc:  # missing artifacts, a flavour we cannot import, a broken predict
        raise StepError(f"cannot score {model_uri} on the holdout: {one_line(exc)}") from exc
    actual = holdout[TARGET].to_numpy(dtype=np.float64)
    if predicted.shape != actual.shape or not np.all(np.isfinite(predicted)):
        raise StepError(f"{model_uri} gave {predicted.shape} predictions or non-finite ones")
    return float(np.sqrt(np.mean((actual - predicted) ** 2)))


def decide(
    new_version: str,
    new_rmse: float,
    champion_version: str | None,
    champion_rmse: float | None,
    tolerance: float,
) -> tuple[bool, str]:
    """The rule: promote when there is no champion, or new RMSE <= champion RMSE + tolerance."""
    if champion_version is None or champion_rmse is None:
        return (
            True,
            f"no champion yet; version {new_version} (RMSE {new_rmse:.4f}) becomes champion",
        )
    if champion_version == new_version:
        return True, f"version {new_version} is already the champion (RMSE {new_rmse:.4f})"
    limit = f"champion version {champion_version} RMSE {champion_rmse:.4f} + tolerance {tolerance}"
    if new_rmse <= champion_rmse + tolerance:
        return True, f"version {new_version} RMSE {new_rmse:.4f} <= {limit}"
    return False, f"version {new_version} RMSE {new_rmse:.4f} > {limit}; champion stays"


def promote_if_better(
    settings: MlflowSettings, version: str, holdout: pd.DataFrame, tolerance: float = 0.0
) -> GateDecision:
    """Score `version` and the current champion on `holdout`; move `champion` if the new one passes.

    Deterministic and idempotent: the same inputs give the same decision, and a version that is
    already champion is a no-op (promoted, nothing moved). See the module docstring for the order
    of writes.
    """
    from mlflow.exceptions import MlflowException

    version = str(version).strip()
    if not version.isdigit() or int(version) < 1:
        raise StepError(f"--version must be a positive integer, got {version!r}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise StepError(f"--tolerance must be a finite number >= 0, got {tolerance}")
    name = settings.model_name
    with mlflow_session(settings) as client:
        try:
            registered = client.get_registered_model(name)
            new = client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise StepError(
                    f"model {name!r} has no version {version} at {settings.tracking_uri}"
                ) from exc
            raise
        if new.status != "READY":
            raise StepError(f"version {version} of {name!r} is {new.status}, not READY")
        champion = (
            client.get_model_version_by_alias(name, CHAMPION)
            if CHAMPION in (registered.aliases or {})
            else None
        )
        champion_version = str(champion.version) if champion is not None else None

        new_rmse = holdout_rmse(f"models:/{name}/{version}", holdout)
        champion_rmse = None
        if champion_version == version:
            champion_rmse = new_rmse
        elif champion_version is not None:
            champion_rmse = holdout_rmse(f"models:/{name}/{champion_version}", holdout)
        promoted, reason = decide(version, new_rmse, champion_version, champion_rmse, tolerance)

        if champion_version == version:
            # No-op: keep the tags of the decision that made it champion, if they are there.
            if new.tags.get(TAG_DECISION) is None:
                _tag_decision(
                    client, name, version, True, reason, new_rmse, (version, new_rmse), tolerance
                )
            return GateDecision(True, reason, version, new_rmse, champion_rmse, version, None)

        if promoted:
            before = dict(registered.aliases or {})
            _move_champion(client, settings.tracking_uri, name, version, champion_version, before)
        champion_scored = (champion_version, champion_rmse)
        _tag_decision(client, name, version, promoted, reason, new_rmse, champion_scored, tolerance)
        return GateDecision(
            promoted,
            reason,
            version,
            new_rmse,
            champion_rmse,
            version if promoted else champion_version,
            champion_version if promoted else None,
        )


def _move_champion(
    client: Any,
    tracking_uri: str,
    name: str,
    version: str,
    champion_version: str | None,
    aliases_before: dict[str, str],
) -> None:
    """`previous-champion` -> old champion, `champion` -> `version`; on failure put both back."""
    try:
        if champion_version is not None:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, champion_version)
        client.set_registered_model_alias(name, CHAMPION, version)
    except Exception as exc:
        # A write may have landed even though its answer was lost: restore both aliases, champion
        # first, so a put-back that dies half-way still leaves `champion` on the old version.
        failed = f"moving alias {CHAMPION!r} of {name!r} to version {version} failed"
        cause = describe_mlflow_error(tracking_uri, exc)
        try:
            for alias in (CHAMPION, PREVIOUS_CHAMPION):
                _restore_alias(client, name, alias, aliases_before.get(alias))
        except Exception as undo_exc:
            was = {a: aliases_before.get(a, "none") for a in (CHAMPION, PREVIOUS_CHAMPION)}
            raise StepError(
                f"{failed} ({cause}); putting the aliases back failed too ({one_line(undo_exc)}): "
                f"they were {was}, {CHAMPION!r} is unchanged unless the lost write landed; "
                "rerun promote to finish the move"
            ) from exc
        raise StepError(f"{failed}, aliases put back as they were: {cause}") from exc


def _restore_alias(client: Any, name: str, alias: str, version: str | None) -> None:
    """Point `alias` at `version` again, or remove it if it did not exist before."""
    from mlflow.exceptions import MlflowException

    if version is not None:
        client.set_registered_model_alias(name, alias, version)
        return
    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _tag_decision(
    client: Any,
    name: str,
    version: str,
    promoted: bool,
    reason: str,
    new_rmse: float,
    champion: tuple[str | None, float | None] | None,
    tolerance: float,
) -> None:
    champion_version, champion_rmse = champion or (None, None)
    tags = {
        TAG_REASON: reason,
        TAG_NEW_RMSE: repr(new_rmse),
        TAG_CHAMPION_RMSE: "none" if champion_rmse is None else repr(champion_rmse),
        TAG_CHAMPION_VERSION: champion_version or "none",
        TAG_TOLERANCE: repr(tolerance),
        TAG_DECISION: "promoted" if promoted else "rejected",  # last: marks the set complete
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m steps promote --version V --holdout /work/in/holdout.parquet`."""
    parser = argparse.ArgumentParser(prog="python -m steps promote", description=__doc__)
    parser.add_argument(
        "--version", default=env_default("MODEL_VERSION"), help="register's version"
    )
    parser.add_argument(
        "--holdout", type=Path, required=True, help="train's holdout split (Parquet)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=env_default("PROMOTE_TOLERANCE", "0.0"),
        help="deg F of RMSE the new model may be worse by (env PROMOTE_TOLERANCE, default 0.0)",
    )
    MlflowSettings.add_arguments(parser)
    add_outputs_dir(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        settings = MlflowSettings.from_args(args)
        holdout = read_training_frame(args.holdout, what="holdout")
        decision = promote_if_better(settings, args.version or "", holdout, args.tolerance)
        write_outputs(args.outputs_dir, decision.outputs())

    return run(body)
