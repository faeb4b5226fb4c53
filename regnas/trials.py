"""A study's trials sorted by what happened to them, with the error and MFLOPs of each model.

Figures, the design-space comparison and the dashboard notes all read a study through
`StudyTrials`, so they agree on which trials count. A trial is one of:

- trained: not rejected, and COMPLETE or PRUNED (Hyperband stopped it after some epochs);
- rejected: PRUNED before training with the user attribute ``rejected`` (broke the MFLOPs
  budget or the stage limit); counted, never drawn;
- failed: FAIL, with an optional ``fail_reason``;
- unfinished: RUNNING or WAITING.

This module reads user attributes by name and imports no training code, so that the report
commands start without loading JAX.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import math
from typing import Any

import optuna


# User attribute keys written by `regnas.study`; they are a storage format and must not change.
REJECTED_KEY = "rejected"
FAIL_REASON_KEY = "fail_reason"
DUPLICATE_KEY = "duplicate_of"
SETTINGS_KEY = "regnas.settings"
# Host name and process id of the worker that runs (or last ran) a trial.
WORKER_HOST_KEY = "worker_host"
WORKER_PID_KEY = "worker_pid"
DEFAULT_IMAGE_SIZE = 28

# Metric names that carry the error directly, and names whose complement (1 - value) is it.
_ERROR_METRICS = ("error", "val_error")
_ACCURACY_METRICS = ("val_accuracy", "accuracy")

_State = optuna.trial.TrialState


@dataclasses.dataclass(frozen=True)
class ErrorSource:
    """Rule for a trial's error: objective `index`, used as is or as 1 - value."""

    index: int
    from_accuracy: bool
    label: str

    def error(self, values: Sequence[float] | None) -> float | None:
        """Return the error for a trial's objective values, or None when it has none."""
        if values is None or len(values) <= self.index:
            return None
        value = values[self.index]
        if value is None or not math.isfinite(value):
            return None
        return 1.0 - value if self.from_accuracy else value


def error_source(
    metric_names: Sequence[str] | None, directions: Sequence[optuna.study.StudyDirection]
) -> ErrorSource:
    """Pick the objective that measures the error, from the metric names or the directions.

    A metric named ``error`` (or ``val_error``) is used as is, and one named ``val_accuracy``
    (or ``accuracy``) as 1 - value. Without such a name, the first objective is taken: as an
    accuracy when it is maximized, because regnas maximizes validation accuracy, and as an error
    when it is minimized.
    """
    names = list(metric_names or [])
    for index, name in enumerate(names):
        if name in _ERROR_METRICS:
            return ErrorSource(index, from_accuracy=False, label=name)
    for index, name in enumerate(names):
        if name in _ACCURACY_METRICS:
            return ErrorSource(index, from_accuracy=True, label=f"error (1 - {name})")
    # Without metric names, a single maximized objective is regnas's validation accuracy.
    name = metric_labels(names, directions)[0] if directions else "objective 0"
    if directions and directions[0] == optuna.study.StudyDirection.MAXIMIZE:
        return ErrorSource(0, from_accuracy=True, label=f"error (1 - {name})")
    return ErrorSource(0, from_accuracy=False, label=f"error ({name})")


@dataclasses.dataclass(frozen=True)
class StudyTrials:
    """A snapshot of one study's trials, grouped by outcome.

    Attributes:
        study_name: Name of the study.
        metric_names: The study's metric names, or None when it set none.
        directions: Direction of each objective.
        source: How the error of a trial is computed.
        settings: The study's ``regnas.settings`` user attribute, or an empty dict.
        trials: All trials in number order.
    """

    study_name: str
    metric_names: list[str] | None
    directions: list[optuna.study.StudyDirection]
    source: ErrorSource
    settings: dict[str, Any]
    trials: list[optuna.trial.FrozenTrial]

    @classmethod
    def from_study(cls, study: optuna.Study) -> StudyTrials:
        """Read the trials and the attributes that the figures need from `study`."""
        metric_names = study.metric_names
        directions = list(study.directions)
        settings = study.user_attrs.get(SETTINGS_KEY)
        return cls(
            study_name=study.study_name,
            metric_names=list(metric_names) if metric_names else None,
            directions=directions,
            source=error_source(metric_names, directions),
            settings=settings if isinstance(settings, dict) else {},
            trials=sorted(study.get_trials(deepcopy=False), key=lambda trial: trial.number),
        )

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @property
    def image_size(self) -> int:
        return image_size(self.settings)

    @property
    def metric_labels(self) -> list[str]:
        return metric_labels(self.metric_names, self.directions)

    @property
    def rejected(self) -> list[optuna.trial.FrozenTrial]:
        return [trial for trial in self.trials if is_rejected(trial)]

    @property
    def failed(self) -> list[optuna.trial.FrozenTrial]:
        return [trial for trial in self.trials if trial.state == _State.FAIL]

    @property
    def unfinished(self) -> list[optuna.trial.FrozenTrial]:
        return [trial for trial in self.trials if trial.state in (_State.RUNNING, _State.WAITING)]

    @property
    def trained(self) -> list[optuna.trial.FrozenTrial]:
        """Trials that were trained: complete, or pruned by the pruner after some epochs."""
        states = (_State.COMPLETE, _State.PRUNED)
        return [trial for trial in self.trials if trial.state in states and not is_rejected(trial)]

    @property
    def complete(self) -> list[optuna.trial.FrozenTrial]:
        """Complete trials with a finite error, duplicates of earlier architectures included."""
        return [
            trial
            for trial in self.trials
            if trial.state == _State.COMPLETE
            and not is_rejected(trial)
            and self.error(trial) is not None
        ]

    @property
    def models(self) -> list[optuna.trial.FrozenTrial]:
        """Complete trials that trained a new architecture: one per model, for statistics."""
        return [trial for trial in self.complete if DUPLICATE_KEY not in trial.user_attrs]

    def error(self, trial: optuna.trial.FrozenTrial) -> float | None:
        """Return the trial's error, or None when it has no finite objective value."""
        return self.source.error(trial.values)

    def errors(self, trials: Sequence[optuna.trial.FrozenTrial]) -> list[float]:
        """Return the errors of trials from `complete` or `models`, which all have one."""
        errors = [self.error(trial) for trial in trials]
        if any(error is None for error in errors):
            raise ValueError("errors() takes only complete trials with a finite error.")
        return errors  # type: ignore[return-value]

    def best(self, count: int) -> list[optuna.trial.FrozenTrial]:
        """Return up to `count` models with the lowest error, best first; ties by number."""
        ranked = sorted(self.models, key=lambda trial: (self.error(trial), trial.number))
        return ranked[:count]

    def counts_text(self) -> str:
        """Summarize the trial counts in one line, for notes under figures."""
        trained = self.trained
        complete = sum(trial.state == _State.COMPLETE for trial in trained)
        parts = [f"{len(trained)} trained ({complete} complete, {len(trained) - complete} pruned)"]
        parts.append(f"{len(self.rejected)} rejected before training")
        parts.append(f"{len(self.failed)} failed")
        if self.unfinished:
            parts.append(f"{len(self.unfinished)} running or waiting")
        duplicates = len(self.complete) - len(self.models)
        if duplicates:
            parts.append(f"{duplicates} repeated an earlier architecture")
        return ", ".join(parts)


def image_size(settings: Any) -> int:
    """Return the input side stored in a study's settings, or 28 when they lack it."""
    size = settings.get("image_size") if isinstance(settings, dict) else None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        return DEFAULT_IMAGE_SIZE
    return size


def metric_labels(
    metric_names: Sequence[str] | None, directions: Sequence[optuna.study.StudyDirection]
) -> list[str]:
    """Return a name per objective: the metric names, or ``objective I`` when unset."""
    if metric_names and len(metric_names) == len(directions):
        return list(metric_names)
    if len(directions) == 1 and directions[0] == optuna.study.StudyDirection.MAXIMIZE:
        return ["val_accuracy"]
    return [f"objective {index}" for index in range(len(directions))]


# The reason a search rejects a sample before training, printed by the search log and status.
REJECTION_CAUSE = "outside the complexity budget or the stage limit"


def is_rejected(trial: optuna.trial.FrozenTrial) -> bool:
    return REJECTED_KEY in trial.user_attrs


def mflops(trial: optuna.trial.FrozenTrial) -> float | None:
    """Return the MFLOPs that the search stored for the trial, or None when missing."""
    value = trial.user_attrs.get("mflops")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def last_intermediate(trial: optuna.trial.FrozenTrial) -> tuple[int, float] | None:
    """Return the last reported (step, value) of a trial, or None when it reported none."""
    if not trial.intermediate_values:
        return None
    step = max(trial.intermediate_values)
    return step, trial.intermediate_values[step]
