"""promote: the gate. Move the `champion` alias to a new version only if it is not worse on holdout.

The gate is never decided by the candidate's data alone. A candidate is promoted only if:
1. its line stays within the physical band of dew point over the temperatures of the holdouts it
   is judged on (P1-P99): at most the temperature + validate's dew point tolerance (dew point
   cannot exceed temperature), at least the Magnus dew point at MIN_RH_PERCENT relative humidity
   (steps/climate.py); this holds even with no champion;
2. with no champion (the first champion of a chain, also after the `champion` alias was removed),
   the units of its training data must be known: its training run's `data.units` tag
   (steps/validate.py `units_evidence`: validate judged every station by FRSHTT thunder days, or
   fetch downloaded the rows from NOAA's default locations, or generated them) is not
   `unchecked`, and a run without the tag counts as unchecked. No reference judges a first
   champion, and temp and dewp alone cannot decide units: a deg C summer extract reads as a cold
   station in deg F, and its line stays in the physical band. `--trust-units` promotes it anyway,
   on the word of whoever passes it; the reason says so. The first champion anchors every later
   gate (rule 4), so this is the root of the chain's trust. With a champion the references judge;
3. its RMSE on this run's holdout is at most the champion's + tolerance;
4. on each reference holdout, its RMSE is at most that of the reference's own version there x
   (1 + REFERENCE_SLACK) + tolerance. The references are the champion's (logged by its training
   run, steps/model.py REFERENCE_HOLDOUT_ARTIFACT) and the anchor's: the reference of the first
   champion of the chain, carried forward from champion to champion in the `gate.anchor_version`
   tag, never replaced. The anchor's bound is fixed (its own version's RMSE, not the current
   champion's), so a chain of small steps cannot drift away from it: each step may look fine
   against the previous champion, yet the chain as a whole is held to the first reference. A
   candidate fitted to data that is easy to fit, or in other units, cannot win on its own holdout
   and lose a reference by far.
A champion trained before reference holdouts were logged has none: rule 4 is skipped for it and
the reason says so. An anchor version that was deleted, or has no reference, is skipped the same
way (the champion's reference then anchors the chain).

A compare-and-set: MLflow has no conditional alias write (`SetRegisteredModelAlias` takes a name,
an alias and a version, nothing to compare: mlflow/protos/model_registry.proto; the SQL store
merges the row unconditionally, mlflow/store/model_registry/sqlalchemy_store.py
`set_registered_model_alias`, MLflow 3.17.2), and an alias write can land long after it was sent.
So a promotion first claims its place in the history: the tags `gate.claimed_at` (UTC seconds) and
`gate.replaces` (the champion it replaces, or "none") on the new version, before any alias moves.
It then looks for a rival: another version claiming to replace the same champion, undecided (no
`gate.decision`) and claimed less than its lease ago (`gate.claim_lease_s`, written with the claim
from `--claim-lease`; CLAIM_LEASE_S for a claim without a readable one). A rival means another
promote is moving the champion at this moment: this one withdraws its claim and stops (exit 75, one
line naming the rival, nothing moved). Last, the champion is read again; if it moved, the gate is
judged again against the new champion (at most MAX_REDO times). Of two promotes from one champion
at most one moves it: each writes its claim before it reads the other's, so the later reader sees
the earlier claim. `gate.replaces` stays on every promoted version, so the chain of champions can
be read back from the versions even if an alias was moved by hand. Local runs are also serialised
per tracking server and model (`steps.processes.release_lock`, held by the local runner and by the
promote CLI), Argo runs by the template's mutex on the model name (workflows/pipeline.py).

Write order (so an alias is never half-moved and the evidence is never lost): score everything
first; then the `gate.*` evidence tags on the new version (all but `gate.decision`); then the claim;
then `previous-champion` to the old champion and `champion` to the new version; then `gate.decision`
(its presence means the decision is complete); last, the model history plot (steps/history.py) on
the judged version's training run, whose failure only warns. A failure before the alias writes moves
nothing. If an alias write fails, both aliases are put back to what they were before the step; if
the tracking server is gone for good between the two writes (the put-back fails too), `champion` is
still the old version and `previous-champion` names it as well, the error line says so, and a retry
of the step redoes the same writes. If only `gate.decision` fails after the aliases moved, the error
says what moved, and a rerun writes only the missing tags (the evidence written before the move is
kept, never replaced by "already the champion").

A decision, once made, is final: a rerun of promote on a version with `gate.decision` (rejected,
or promoted and replaced since) moves nothing, writes nothing and answers the recorded decision;
on the champion it only completes missing tags. Evidence with no `gate.decision` on a version that
is not the champion belongs to no decision (the try stopped before deciding): it is written again.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steps.cli import BadInput, StepError, TransientError, one_line, run
from steps.climate import dewpoint_f
from steps.model import FEATURE, REFERENCE_HOLDOUT_ARTIFACT, TARGET
from steps.model_trust import verified_model_dir
from steps.processes import release_lock
from steps.register import TAG_DATA_UNITS, TAG_DATA_UNITS_BASIS, search_literal
from steps.settings import MlflowSettings
from steps.stages import CHAMPION, NO_CHAMPION, PREVIOUS_CHAMPION, PROMOTE
from steps.tracking import (
    DOES_NOT_EXIST,
    canonical_version,
    describe_mlflow_error,
    error_for,
    mlflow_session,
    named_by_input,
    registered_aliases,
)
from steps.train import read_training_frame
from steps.validate import DEFAULT_DEWP_TOLERANCE_F, MIN_SPREAD_F, UNCHECKED, UNITS_EVIDENCE

TAG_DECISION = "gate.decision"
TAG_REASON = "gate.reason"
TAG_NEW_RMSE = "gate.new_rmse"
TAG_CHAMPION_RMSE = "gate.champion_rmse"
TAG_CHAMPION_VERSION = "gate.champion_version"
TAG_TOLERANCE = "gate.tolerance"
TAG_REFERENCE_VERSION = "gate.reference_version"
TAG_NEW_REFERENCE_RMSE = "gate.new_reference_rmse"
TAG_CHAMPION_REFERENCE_RMSE = "gate.champion_reference_rmse"
# The version whose reference holdout anchors the gate (rule 4); carried forward by each promotion.
TAG_ANCHOR_VERSION = "gate.anchor_version"
# Rule 2: the candidate's run's data.units as read ("missing" without one; "not judged" on a
# champion completed by hand), and whether --trust-units was given.
TAG_UNITS = "gate.units"
TAG_TRUST_UNITS = "gate.trust_units"
# The claim (module docstring): when it was made (UTC seconds), and the champion it replaces.
TAG_CLAIMED_AT = "gate.claimed_at"
TAG_REPLACES = "gate.replaces"
TAG_CLAIM_LEASE = "gate.claim_lease_s"
# Every gate tag, in write order; gate.decision last marks the set complete.
GATE_TAGS = (TAG_REASON, TAG_NEW_RMSE, TAG_CHAMPION_RMSE, TAG_CHAMPION_VERSION, TAG_TOLERANCE,
             TAG_REFERENCE_VERSION, TAG_NEW_REFERENCE_RMSE, TAG_CHAMPION_REFERENCE_RMSE,
             TAG_ANCHOR_VERSION, TAG_UNITS, TAG_TRUST_UNITS, TAG_DECISION)  # fmt: skip
# Rule 4: how much worse than a reference's own version a candidate may be on that reference.
# The version was fitted to that data's distribution; a candidate from a newer year of the same
# stations scores within a few percent of it there (the synthetic source's other seeds: within
# 0.3 %), one fitted to other units or to a degenerate extract scores worse: a summer extract in
# deg C 11-16 % worse on deg F data, since its line is the deg F one shifted by about 2.4 F
# (tests/test_promote.py::test_a_chain_of_small_unit_drifts_never_makes_the_deg_c_model_champion).
REFERENCE_SLACK = 0.05
# Rule 1: the lowest relative humidity the fitted line may imply at any judged temperature,
# percent. The line is the mean dew point of the days at each temperature, so the bound is one
# for a climate's average day, not for one dry afternoon (single readings reach 0.3-2 % in
# deserts). Source: "Low Relative Humidity in the Atmosphere", technical report, DTIC
# accession ADA207558 (https://apps.dtic.mil/sti/html/tr/ADA207558/index.html): over most of the
# driest deserts (northern Africa, southwestern Asia) the typical afternoon minimum is 10-20 % in
# spring and summer, and only in small areas is the average afternoon minimum of the driest
# months slightly under 10 %. A day's mean temperature is below its afternoon maximum while
# its dew point changes little, so its mean RH is above that afternoon minimum: a line implying
# under 10 % somewhere claims days drier on average than the driest months' afternoons of the
# driest deserts. Measured on 12 real NCEI station-years (2023-2024, polar to tropical): the
# lines fitted to them imply at least 35.5 % over their own P1-P99 temperatures (Beijing's the
# lowest); single days' RH from daily means has a 1st percentile of 25.8 % and a minimum of
# 10.3 %. Data made to fit dewp = 0.3 * temp - 5 implies 7.7 % at 95 F: refused. (Was 15 %,
# without a source; it refused a desert station's line at 11 % on its hottest days.)
MIN_RH_PERCENT = 10.0
# Rule 1: a daily mean dew point may exceed the daily mean temperature a little (validate's rule).
BAND_PERCENTILES = (1.0, 99.0)
BAND_POINTS = 51
# Times the gate is judged again when the champion moved while this step scored.
MAX_REDO = 2
# An undecided claim older than its lease is one whose promote died: it no longer blocks others.
# Far above a promote's time from its claim to its alias writes (a few MLflow requests, each
# bounded by steps/tracking.py's timeouts and retries); clocks of the machines must agree within
# it. The default, and the lease of a claim that records none.
CLAIM_LEASE_S: float = PROMOTE.flag("claim-lease").default
CLAIM_LEASE_KIND = PROMOTE.flag("claim-lease").kind
TRUST_UNITS_PARAMETER = PROMOTE.flag("trust-units").parameter
# How long the promote CLI waits for another local promote or run of the same release.
RELEASE_LOCK_TIMEOUT_S = 600.0


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
            "champion-version": self.champion_version or NO_CHAMPION,
        }


@dataclass(frozen=True)
class ReferenceScores:
    """RMSE (deg F) of the candidate and of the reference's own version on one reference holdout."""

    version: str  # the version whose training run logged the reference
    role: str  # what that version is to the gate: "champion" or "anchor"
    new_rmse: float
    version_rmse: float  # the RMSE of `version` itself on its reference: the fixed baseline


def decide(
    new_version: str,
    new_rmse: float,
    champion_version: str | None,
    champion_rmse: float | None,
    tolerance: float,
    *,
    references: tuple[ReferenceScores, ...] = (),
    out_of_band: str | None = None,
    unchecked_units: str | None = None,
    trust_units: bool = False,
) -> tuple[bool, str]:
    """The rule (module docstring): (promoted, one-line reason naming the check that decided).

    `out_of_band` is why the candidate's line leaves the physical band (see `physical_band`), or
    None; `references` the scores on the champion's and the anchor's reference holdouts (those
    that exist); `unchecked_units` why nothing checked the units of the candidate's data (see
    `units_problem`), or None; `trust_units` whether to promote a first champion all the same.
    """
    if champion_version == new_version:
        return True, f"version {new_version} is already the champion (RMSE {new_rmse:.4f})"
    if out_of_band is not None:
        stays = "champion stays" if champion_version else "no champion"
        return False, f"version {new_version} rejected: {out_of_band}; {stays}"
    if champion_version is None or champion_rmse is None:
        if unchecked_units is not None and not trust_units:
            return False, (
                f"version {new_version} rejected: no champion to judge against and "
                f"{unchecked_units}; if the data is in deg F, train and promote it again with "
                f"--trust-units true (workflow parameter {TRUST_UNITS_PARAMETER}=true), as this "
                "decision is final"
            )
        trusted = f"; its units taken on trust (--trust-units): {unchecked_units}"
        return (
            True,
            f"no champion yet; version {new_version} (RMSE {new_rmse:.4f}, within the physical "
            f"band) becomes champion{trusted if unchecked_units else ''}",
        )
    limit = f"champion version {champion_version} RMSE {champion_rmse:.4f} + tolerance {tolerance}"
    if new_rmse > champion_rmse + tolerance:
        return False, f"version {new_version} RMSE {new_rmse:.4f} > {limit}; champion stays"
    own = f"version {new_version} RMSE {new_rmse:.4f} <= {limit}"
    if not references:
        return True, f"{own} (champion version {champion_version} has no reference holdout)"
    passed = []
    for reference in references:
        bound = reference.version_rmse * (1 + REFERENCE_SLACK) + tolerance
        on_reference = (
            f"on the reference holdout of version {reference.version} ({reference.role}): RMSE "
            f"{reference.new_rmse:.4f} {{}} version {reference.version}'s "
            f"{reference.version_rmse:.4f} x {1 + REFERENCE_SLACK:g} + tolerance {tolerance}"
        )
        if reference.new_rmse > bound:
            return False, f"version {new_version} {on_reference.format('>')}; champion stays"
        passed.append(on_reference.format("<="))
    return True, "; ".join([own, *passed])


def units_problem(run_tags: dict[str, str] | None) -> str | None:
    """Why nothing checked the units of the data a version was trained on (rule 2), from its
    training run's tags (None: no run), or None when they are known. Fail closed: a missing
    tag, or a value train does not write, counts as unchecked."""
    units = (run_tags or {}).get(TAG_DATA_UNITS)
    if units is None:
        return (
            f"its training run has no {TAG_DATA_UNITS} tag (logged before units were recorded, "
            "or not by train), so its data's units count as unchecked"
        )
    if units in UNITS_EVIDENCE and units != UNCHECKED:
        return None
    basis = (run_tags or {}).get(TAG_DATA_UNITS_BASIS, "no basis recorded")
    return (
        f"validate could not check its data's units ({TAG_DATA_UNITS}={units}: {basis}; "
        "nor did fetch download it from NOAA or generate it)"
    )


def physical_band(model: Any, temps: np.ndarray, dewp_tolerance: float) -> str | None:
    """Why the model's line leaves the physical band of dew point, or None if it stays inside.

    The temperatures must spread as validate demands (MIN_SPREAD_F); then, over BAND_POINTS
    temperatures spanning the BAND_PERCENTILES of `temps` (deg F), the predicted
    dew point must be at most temp + `dewp_tolerance` (dew point never exceeds the temperature)
    and at least the Magnus dew point at MIN_RH_PERCENT relative humidity (steps/climate.py).
    """
    spread = float(np.std(temps))
    if spread < MIN_SPREAD_F:
        return (
            f"the holdouts' temperatures have a standard deviation of {spread:.3g} F, under "
            f"{MIN_SPREAD_F:g} F: no line can be judged on them (validate's temp_spread rule)"
        )
    low, high = np.percentile(temps, BAND_PERCENTILES)
    grid = np.linspace(low, high, BAND_POINTS)
    predicted = _predict(model, pd.DataFrame({FEATURE: grid}))
    above = predicted - (grid + dewp_tolerance)
    if (above > 0).any():
        i = int(np.argmax(above))
        return (
            f"its line predicts dew point {predicted[i]:.1f} F at temp {grid[i]:.1f} F, above the "
            f"temperature + {dewp_tolerance:g} F (dew point cannot exceed temperature)"
        )
    floor = dewpoint_f(grid, MIN_RH_PERCENT)
    below = floor - predicted
    if (below > 0).any():
        i = int(np.argmax(below))
        return (
            f"its line predicts dew point {predicted[i]:.1f} F at temp {grid[i]:.1f} F, below "
            f"{floor[i]:.1f} F, the dew point at {MIN_RH_PERCENT:g}% relative humidity (Magnus)"
        )
    return None


def _predict(model: Any, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict(frame[[FEATURE]]), dtype=np.float64).reshape(-1)


def _load(model_uri: str, local_path: Path | None = None) -> Any:
    """Load `model_uri` as a pyfunc, from `local_path` when it was downloaded (and checked)."""
    import mlflow.pyfunc

    try:
        return mlflow.pyfunc.load_model(str(local_path) if local_path else model_uri)
    except Exception as exc:  # missing artifacts, a flavour we cannot import
        raise error_for(exc)(f"cannot score {model_uri} on the holdout: {one_line(exc)}") from exc


def rmse_of(model: Any, model_uri: str, holdout: pd.DataFrame) -> float:
    """RMSE (deg F) of a loaded model on the holdout rows."""
    try:
        predicted = _predict(model, holdout)
    except Exception as exc:  # a broken predict
        raise error_for(exc)(f"cannot score {model_uri} on the holdout: {one_line(exc)}") from exc
    actual = holdout[TARGET].to_numpy(dtype=np.float64)
    if predicted.shape != actual.shape or not np.all(np.isfinite(predicted)):
        raise StepError(f"{model_uri} gave {predicted.shape} predictions or non-finite ones")
    return float(np.sqrt(np.mean((actual - predicted) ** 2)))


def reference_holdout(client: Any, name: str, version: str) -> pd.DataFrame | None:
    """The reference holdout logged by the training run of `version`, or None if it has none
    (or the version was deleted)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        run_id = client.get_model_version(name, version).run_id
    except MlflowException as exc:
        if exc.error_code == DOES_NOT_EXIST:
            return None
        raise
    if not run_id:
        return None
    folder, file_name = REFERENCE_HOLDOUT_ARTIFACT.rsplit("/", 1)
    if file_name not in {Path(a.path).name for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory(prefix="dewpoint-reference-") as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=REFERENCE_HOLDOUT_ARTIFACT, dst_path=tmp
        )
        return read_training_frame(Path(path), what=f"reference holdout of version {version}")


def anchor_of(client: Any, name: str, champion_version: str) -> str:
    """The version whose reference anchors the gate for `champion_version`: its
    `gate.anchor_version` tag, or the champion itself when it has none (made before anchors, or by
    hand)."""
    tags = client.get_model_version(name, champion_version).tags or {}
    anchor = tags.get(TAG_ANCHOR_VERSION, "none")
    return champion_version if anchor == "none" else canonical_version(anchor, TAG_ANCHOR_VERSION)


def promote_if_better(
    settings: MlflowSettings,
    version: str,
    holdout: pd.DataFrame,
    tolerance: float = 0.0,
    claim_lease: float = CLAIM_LEASE_S,
    trust_units: bool = False,
) -> GateDecision:
    """Score `version` and the current champion on `holdout`; move `champion` if the new one passes.

    Deterministic and idempotent: the same inputs give the same decision, and a version that is
    already champion is a no-op (promoted, nothing moved; missing gate tags are completed). See
    the module docstring for the compare-and-set and the order of writes.

    Raises:
        BadInput: a version that is not a positive integer, a model or version the registry does
            not have (`steps.tracking.named_by_input`); nothing is written.
        StepError: a version that is not READY, MLflow failures (one line saying what, if
            anything, moved), the champion moving on every try.
    """

    version = canonical_version(version)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise BadInput(f"--tolerance must be a finite number >= 0, got {tolerance}")
    try:
        CLAIM_LEASE_KIND.parse(str(claim_lease))
    except ValueError as exc:
        raise BadInput(f"--claim-lease {claim_lease!r}: {exc}") from None
    name = settings.model_name
    uri = settings.tracking_uri
    with mlflow_session(settings) as client:
        with named_by_input(f"registered model {name!r}", uri):
            aliases = registered_aliases(client, name)
        with named_by_input(f"version {version} of registered model {name!r}", uri):
            new = client.get_model_version(name, version)
        if new.status != "READY":
            raise StepError(f"version {version} of {name!r} is {new.status}, not READY")
        run_tags = _run_tags(client, new.run_id)
        units_read = (run_tags or {}).get(TAG_DATA_UNITS, "missing")

        models: dict[str, Any] = {}  # version -> loaded pyfunc, each loaded once
        scores: dict[tuple[str, str], float] = {}  # (version, holdout) -> RMSE
        references: dict[str, pd.DataFrame | None] = {}  # champion -> its reference holdout

        def model(v: str) -> Any:
            # Loading a model runs its code: a version is downloaded as data and checked to be
            # our served model first (steps/model_trust.py), and exactly those files are loaded.
            if v not in models:
                role = "version" if v == version else "champion" if v == current else "anchor"
                with tempfile.TemporaryDirectory(prefix="dewpoint-promote-") as tmp:
                    local = verified_model_dir(client, name, v, Path(tmp), role=role)
                    models[v] = _load(f"models:/{name}/{v}", local)
            return models[v]

        def scored(v: str, on: str = "own") -> float:
            frame = holdout if on == "own" else references[on]
            if (v, on) not in scores:
                scores[(v, on)] = rmse_of(model(v), f"models:/{name}/{v}", frame)
            return scores[(v, on)]

        current: str | None = aliases.get(CHAMPION)
        if TAG_DECISION in (new.tags or {}) and current != version:
            return _decided_before(new, current)

        def moved(now: dict[str, str], judged_against: str | None, attempt: int) -> bool:
            """Whether the champion moved since it was read; says so, or gives up."""
            if now.get(CHAMPION) == judged_against:
                return False
            change = f"{judged_against or 'none'} to {now.get(CHAMPION) or 'none'}"
            if attempt == MAX_REDO:
                raise StepError(
                    f"the champion of {name!r} moved again while this gate scored (from "
                    f"{change}), {MAX_REDO + 1} times; nothing was written; rerun promote"
                )
            print(f"note: the champion moved from {change} while this gate scored; "
                  "judging again against the new champion", file=sys.stderr)  # fmt: skip
            return True

        for attempt in range(MAX_REDO + 1):
            champion_version = current = aliases.get(CHAMPION)
            if champion_version == version:
                decision = _already_champion(client, name, new, scored(version), tolerance)
                break
            new_rmse = scored(version)
            champion_rmse = None if champion_version is None else scored(champion_version)
            judged: list[ReferenceScores] = []
            anchor = version  # what this version carries forward if promoted with no champion
            if champion_version is not None:
                first = anchor_of(client, name, champion_version)
                for ref, role in ((champion_version, CHAMPION), (first, "anchor")):
                    if ref not in references:
                        references[ref] = reference_holdout(client, name, ref)
                    if references[ref] is not None and all(r.version != ref for r in judged):
                        judged.append(
                            ReferenceScores(ref, role, scored(version, ref), scored(ref, ref))
                        )
                # The anchor is kept while its reference exists; else the champion's takes over.
                anchor = next((r.version for r in reversed(judged)), version)
            judged_on = [holdout] + [references[r.version] for r in judged]
            temps = np.concatenate([f[FEATURE].to_numpy(dtype=np.float64) for f in judged_on])
            out_of_band = physical_band(model(version), temps, DEFAULT_DEWP_TOLERANCE_F)
            promoted, reason = decide(
                version, new_rmse, champion_version, champion_rmse, tolerance,
                references=tuple(judged), out_of_band=out_of_band,
                unchecked_units=units_problem(run_tags), trust_units=trust_units,
            )  # fmt: skip
            # Compare-and-set: the champion read right before the first write must be the one
            # judged against; otherwise judge again (another run promoted while this one scored).
            aliases = registered_aliases(client, name)
            if moved(aliases, champion_version, attempt):
                continue
            evidence = _evidence(
                reason, new_rmse, champion_version, champion_rmse, tolerance, tuple(judged), anchor
            ) | {TAG_UNITS: units_read, TAG_TRUST_UNITS: str(trust_units).lower()}
            _write_tags(
                client, uri, name, version, evidence, "before any alias moved; nothing moved"
            )
            if promoted:
                _claim(client, uri, name, version, champion_version, claim_lease)
                try:
                    aliases = registered_aliases(client, name)
                except BaseException:
                    _withdraw(client, name, version)
                    raise
                if moved(aliases, champion_version, attempt):
                    _withdraw(client, name, version)
                    continue
                _move_champion(client, uri, name, version, champion_version, aliases)
                moved_now = f"champion moved from version {champion_version or 'none'} to {version}"
                if champion_version:
                    moved_now += f", previous-champion to {champion_version}"
            else:
                moved_now = "nothing moved (rejected)"
            outcome = {TAG_DECISION: "promoted" if promoted else "rejected"}
            state = f"after the decision: {moved_now}; rerun promote to complete the tags"
            _write_tags(client, uri, name, version, outcome, state)
            decision = GateDecision(
                promoted,
                reason,
                version,
                new_rmse,
                champion_rmse,
                version if promoted else champion_version,
                champion_version if promoted else None,
            )
            break
        _log_history(client, name, decision.champion_version, new.run_id)
        return decision


def _run_tags(client: Any, run_id: str | None) -> dict[str, str] | None:
    """The tags of a version's training run; None when it has none or the run is gone."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return dict(client.get_run(run_id).data.tags)
    except MlflowException as exc:
        if exc.error_code == DOES_NOT_EXIST:
            return None
        raise


def _claim(
    client: Any, uri: str, name: str, version: str, champion: str | None, lease: float
) -> None:
    """Claim `version`'s place after `champion` (module docstring); refuse if another promote
    claimed the same place and has not decided yet. The claim is withdrawn on refusal.

    Raises:
        TransientError: a rival claim (one line: which version, what the aliases are now).
        StepError: the claim could not be written (nothing moved).
    """
    replaces = champion or "none"
    claim = {
        TAG_CLAIMED_AT: f"{time.time():.3f}", TAG_CLAIM_LEASE: f"{lease:g}", TAG_REPLACES: replaces,
    }  # fmt: skip
    _write_tags(client, uri, name, version, claim, "before any alias moved; nothing moved")
    try:
        rivals = _rivals(client, name, version, replaces)
    except BaseException:
        _withdraw(client, name, version)  # a claim left behind would block every other promote
        raise
    if not rivals:
        return
    _withdraw(client, name, version)
    now = registered_aliases(client, name)
    versions = ", ".join(rival for rival, _ in rivals)
    expiry = max(expires for _, expires in rivals)
    raise TransientError(
        f"promote of version {version} from champion {replaces} raced the promote of version "
        f"{versions} from the same champion (its {TAG_REPLACES} tag is undecided): "
        f"nothing moved by this one; {CHAMPION} is {now.get(CHAMPION) or 'none'}, "
        f"{PREVIOUS_CHAMPION} {now.get(PREVIOUS_CHAMPION) or 'none'}; rerun promote. If that "
        f"promote died, its claim stops blocking at {expiry} (its {TAG_CLAIM_LEASE}), or at once "
        f"when the tag {TAG_REPLACES} is deleted from version {versions}"
    )


def _rivals(client: Any, name: str, version: str, replaces: str) -> list[tuple[str, str]]:
    """Other versions of `name` claiming to replace `replaces`, undecided, claimed within their
    lease (`_lease`; a claim with no readable time counts as recent), in version order: each as
    (version, when its claim stops blocking, UTC ISO 8601 to the second, or "never (no readable
    gate.claimed_at)")."""
    by_tag = f"tags.`{TAG_REPLACES}` = '{replaces}'"
    literal = search_literal(name)
    found = client.search_model_versions(f"name = {literal} and {by_tag}" if literal else by_tag)
    rivals = []
    for mv in found:
        tags = mv.tags or {}
        if mv.name != name or str(mv.version) == version or TAG_DECISION in tags:
            continue
        if tags.get(TAG_REPLACES) != replaces:
            continue
        try:
            age = time.time() - float(tags.get(TAG_CLAIMED_AT, "nan"))
        except ValueError:
            age = math.nan
        lease = _lease(tags)
        if not age > lease:
            expires = _utc(time.time() - age + lease, f"never (no readable {TAG_CLAIMED_AT})")
            rivals.append((canonical_version(mv.version, "a rival version"), expires))
    return sorted(rivals, key=lambda rival: int(rival[0]))


def _lease(tags: dict[str, str]) -> float:
    """A claim's lease in seconds: its `gate.claim_lease_s` if `--claim-lease` would take it,
    else CLAIM_LEASE_S (a claim written before leases were recorded, or a tag edited by hand)."""
    try:
        return CLAIM_LEASE_KIND.parse(tags.get(TAG_CLAIM_LEASE, ""))
    except ValueError:
        return CLAIM_LEASE_S


def _utc(seconds: float, otherwise: str) -> str:
    """`seconds` since the epoch as UTC ISO 8601 to the second; `otherwise` for a time no
    calendar holds (NaN, or a `gate.claimed_at` edited to 1e300)."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return otherwise


def _withdraw(client: Any, name: str, version: str) -> None:
    """Remove this promote's claim; a failure only leaves it to expire (its lease)."""
    try:
        client.delete_model_version_tag(name, version, TAG_REPLACES)
    except Exception as exc:
        print(f"warning: claim {TAG_REPLACES} on version {version} not withdrawn (it expires "
              f"at the end of its lease, {TAG_CLAIM_LEASE}): {one_line(exc)}",
              file=sys.stderr)  # fmt: skip


def _decided_before(new: Any, champion: str | None) -> GateDecision:
    """A version the gate decided on before (rejected, or promoted and replaced since): the
    recorded decision stands, nothing is written, the champion stays. A rejection is answered
    exactly as it was first (its recorded reason and RMSEs), so a rerun's outputs are the same."""
    version = canonical_version(new.version)
    tags = new.tags or {}

    def recorded(tag: str) -> float | None:
        try:
            return float(tags[tag])
        except (KeyError, ValueError):
            return None

    if tags[TAG_DECISION] == "rejected":
        # Taken from MLflow, where anyone may edit it: written as an output parameter, whose
        # value has no white space at either end (steps.files.ReservedOutputs.write).
        reason = tags.get(TAG_REASON, "").strip() or f"version {version} was rejected before"
    else:
        reason = (
            f"version {version} was promoted before and replaced since; champion is version "
            f"{champion or 'none'}; nothing moved"
        )
    new_rmse = recorded(TAG_NEW_RMSE)
    return GateDecision(
        False,
        reason,
        version,
        math.nan if new_rmse is None else new_rmse,
        recorded(TAG_CHAMPION_RMSE),
        champion,
        None,
    )


# The parameters of `decide`, by design: the tags record exactly what it judged on (shape only).
def _evidence(
    reason: str,
    new_rmse: float,
    champion_version: str | None,
    champion_rmse: float | None,
    tolerance: float,
    references: tuple[ReferenceScores, ...] = (),
    anchor: str | None = None,
) -> dict[str, str]:
    """The gate.* tags that record how a decision was reached (all but gate.decision).

    The reference tags list every reference judged on, comma-separated, champion's first.
    """

    def listed(values: list[str]) -> str:
        return ",".join(values) or "none"

    return {
        TAG_REASON: reason,
        TAG_NEW_RMSE: repr(new_rmse),
        TAG_CHAMPION_RMSE: "none" if champion_rmse is None else repr(champion_rmse),
        TAG_CHAMPION_VERSION: champion_version or "none",
        TAG_TOLERANCE: repr(tolerance),
        TAG_REFERENCE_VERSION: listed([r.version for r in references]),
        TAG_NEW_REFERENCE_RMSE: listed([repr(r.new_rmse) for r in references]),
        TAG_CHAMPION_REFERENCE_RMSE: listed([repr(r.version_rmse) for r in references]),
        TAG_ANCHOR_VERSION: anchor or "none",
        TAG_UNITS: "not judged",
        TAG_TRUST_UNITS: "false",
    }


def _already_champion(
    client: Any, name: str, new: Any, new_rmse: float, tolerance: float
) -> GateDecision:
    """The version is the champion: nothing moves; write only the gate tags it lacks.

    Evidence written by the promote that moved the alias (before it moved) is kept; a champion
    made without this gate (by hand) gets a complete set saying so.
    """
    version = canonical_version(new.version)
    tags = dict(new.tags or {})
    reason = f"version {version} is already the champion (RMSE {new_rmse:.4f})"
    fill = {TAG_DECISION: "promoted"}
    if TAG_REASON not in tags:
        fill = {**_evidence(reason, new_rmse, version, new_rmse, tolerance), **fill}
    for tag in GATE_TAGS:
        if tag in fill and tag not in tags:
            client.set_model_version_tag(name, version, tag, fill[tag])
    return GateDecision(True, reason, version, new_rmse, new_rmse, version, None)


def _write_tags(
    client: Any, uri: str, name: str, version: str, tags: dict[str, str], state: str
) -> None:
    """Set `tags` on the version in order; a failure says which tag and what `state` holds."""
    for key, value in tags.items():
        try:
            client.set_model_version_tag(name, version, key, value)
        except Exception as exc:
            raise StepError(
                f"writing tag {key} on version {version} of {name!r} failed "
                f"({describe_mlflow_error(uri, exc)}) {state}"
            ) from exc


def _log_history(client: Any, name: str, champion: str | None, run_id: str | None) -> None:
    """Log the model history plot to the judged version's training run; a failure only warns.

    The decision is already written: failing the step now would make Argo retry a finished
    promote and skip the deploy of a new champion, for the sake of a picture.
    """
    from steps.history import log_model_history

    if not run_id:
        return
    try:
        log_model_history(client, name, champion, run_id)
    except Exception as exc:
        print(f"warning: model history plot not logged to run {run_id}: {one_line(exc)}",
              file=sys.stderr)  # fmt: skip


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
            raise error_for(exc)(
                f"{failed} ({cause}); putting the aliases back failed too ({one_line(undo_exc)}): "
                f"they were {was}, {CHAMPION!r} is unchanged unless the lost write landed; "
                "rerun promote to finish the move"
            ) from exc
        raise error_for(exc)(f"{failed}, aliases put back as they were: {cause}") from exc
    now = registered_aliases(client, name).get(CHAMPION)
    if now != version:
        raise StepError(
            f"{CHAMPION!r} of {name!r} was set to version {version} but names version {now} "
            "right after: another promote wrote it at the same moment; rerun promote"
        )


def _restore_alias(client: Any, name: str, alias: str, version: str | None) -> None:
    """Point `alias` at `version` again, or remove it if it did not exist before."""
    from mlflow.exceptions import MlflowException

    if version is not None:
        client.set_registered_model_alias(name, alias, version)
        return
    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code != DOES_NOT_EXIST:
            raise


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m steps promote --version V --holdout /work/in/holdout.parquet`."""

    def body() -> None:
        args = PROMOTE.parse(argv)
        settings = MlflowSettings.from_args(args)
        version = "" if args.version is None else str(args.version)
        holdout = read_training_frame(args.holdout, what="holdout")

        def say(line: str) -> None:
            print(line, file=sys.stderr)

        # The outputs' room first: a full disk fails before `champion` moves, not after.
        with PROMOTE.reserve_outputs(args.outputs_dir) as outputs:
            # Two local promotes of one release take turns (the second judges against the
            # first's champion) instead of one refusing on the other's claim.
            with release_lock(
                settings.tracking_uri, settings.model_name, RELEASE_LOCK_TIMEOUT_S, say
            ):
                decision = promote_if_better(
                    settings, version, holdout, args.tolerance, args.claim_lease, args.trust_units
                )
            outputs.write(decision.outputs())

    return run(body)
