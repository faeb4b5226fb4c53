"""A RegNet search as an Optuna study: settings, sampling, budget checks, the objective, logging.

`regnas.workers.run_search` drives it. The study is the unit of resumption: rerunning with the
same name and storage continues until the study contains `trials` finished trials.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
from pathlib import Path
import socket
from typing import Any

import optuna

from regnas.cli import DEFAULT_STUDY, StopRequest, TrialFailedElsewhere, count_text
from regnas.complexity import complexity
from regnas.engine import DeviceData, EpochResult, NonFiniteLossError, TrainConfig, Trainer
from regnas.models import check_precision
from regnas.space import SPACE_NAMES, RegNetSpace, Space, make_space
from regnas.spec import AnyNetSpec
from regnas.storage import open_storage
from regnas.trials import (
    DUPLICATE_KEY,
    REJECTED_KEY,
    REJECTION_CAUSE,
    SETTINGS_KEY,
    WORKER_HOST_KEY,
    WORKER_PID_KEY,
    is_rejected,
)
from regnas.versions import package_versions


_logger = logging.getLogger(__name__)

IMAGE_SIZE = 28
# A trial trains `epochs` epochs of this many images (50 batches of 128), and successive
# halving keeps the best 1/PRUNING_FACTOR of the trials after epochs 1, 4, 16, ... So most
# trials cost one short epoch, and the few that train to the end see 102,400 images, about
# two passes over the training set (docs/benchmarks.md, "The main job").
DEFAULT_EPOCH_SIZE = 6_400
PRUNING_FACTOR = 4
VERSIONS_KEY = "regnas.versions"
SPACE_CONFIG_KEY = "regnas.space_config"
ARCHITECTURE_KEY = "architecture_key"
# Objective name -> (Optuna metric name, direction). The first objective is the quality one.
OBJECTIVES = {
    "accuracy": ("val_accuracy", optuna.study.StudyDirection.MAXIMIZE),
    "error": ("error", optuna.study.StudyDirection.MINIMIZE),
    "mflops": ("mflops", optuna.study.StudyDirection.MINIMIZE),
    "params": ("params", optuna.study.StudyDirection.MINIMIZE),
}
SAMPLERS = ("tpe", "random")
# The fail reason of a trial stopped by Ctrl-C or SIGTERM; summaries count these apart.
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"
# Stop after this many trials in a row fail, because then something other than the sampled
# architectures is broken (data, memory, drivers).
MAX_CONSECUTIVE_FAILURES = 10


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything a search needs; the study stores the part that must not change on resume.

    Attributes:
        study: Study name.
        storage: Storage URL or SQLite path; None means ``studies/regnas.db``.
        trials: Study-wide target of finished (complete or pruned) trials.
        seed: Seed of the sampler and, with the trial number, of each trial's training.
        epochs: Training epochs per trial, which is also the pruner's maximum resource.
        train_size: Training images a trial draws from, taken from the official training set.
        epoch_size: Training images per epoch, drawn at random from the `train_size` ones anew
            each epoch; None means `DEFAULT_EPOCH_SIZE`, or `train_size` if that is smaller.
        val_size: Validation images, held out from the official training set.
        batch_size: Images per SGD step.
        max_mflops: Samples above this many MFLOPs at 28x28 are rejected before compiling.
        min_mflops: Samples below this many MFLOPs are rejected before compiling.
        max_params: Samples with more parameters are rejected before compiling.
        objectives: ``("accuracy",)``, or ``"error"`` followed by ``"mflops"`` and/or
            ``"params"`` for a multi-objective study; see `OBJECTIVES`.
        sampler: ``"tpe"``, or ``"random"`` for an unbiased sample of the space (error EDFs).
        warm_start: ``"zoo"`` enqueues RegNet model-zoo configurations first; None does not.
        space_config: The study definition file the space came from, if any; a new study
            records it, so that an error on resume can name it.
        data_dir: Directory with the Fashion-MNIST IDX files; None searches the defaults.
        stem_w: Stem width of every sampled network.
        stem_stride: Stem stride of every sampled network.
        space: The design space and its ranges.
        lr: Peak learning rate.
        weight_decay: L2 penalty on kernels.
        precision: The dtype the stem and blocks compute in (`TrainConfig.precision`).
    """

    study: str = DEFAULT_STUDY
    storage: str | None = None
    trials: int = 200
    seed: int = 0
    epochs: int = 16
    train_size: int = 55_000
    epoch_size: int | None = None
    val_size: int = 5_000
    batch_size: int = 128
    max_mflops: float | None = 5.0
    min_mflops: float | None = None
    max_params: int | None = None
    objectives: tuple[str, ...] = ("accuracy",)
    sampler: str = "tpe"
    warm_start: str | None = None
    data_dir: str | None = None
    space_config: str | None = None
    # Stem stride 1 keeps 28x28 after the stem, so four stride-2 stages end at 2x2 and no stage
    # before the last one runs at 1x1, where a 3x3 convolution reads mostly padding.
    stem_w: int = 16
    stem_stride: int = 1
    space: Space = dataclasses.field(default_factory=RegNetSpace)
    # Twice regnas.train's rate: in runs of about 100,000 images, 0.2 gave 0.4-1.1 points more
    # validation accuracy than 0.1 (docs/benchmarks.md, "How many images a trial needs").
    lr: float = 0.2
    weight_decay: float = 5e-4
    precision: str = "float32"

    def __post_init__(self) -> None:
        for name in ("trials", "epochs", "train_size", "val_size", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be a positive integer, got {value!r}."
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed must be an integer >= 0, got {self.seed!r}.")
        for name in ("max_mflops", "min_mflops", "max_params"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0
            ):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be a positive number, got {value!r}.")
        if (
            self.min_mflops is not None
            and self.max_mflops is not None
            and self.min_mflops >= self.max_mflops
        ):
            raise ValueError(
                f"--min-mflops {self.min_mflops} is not below --max-mflops {self.max_mflops}; "
                "the budget band is empty."
            )
        _check_objectives(self.objectives)
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}."
            )
        if self.warm_start not in (None, "zoo"):
            raise ValueError(f"--warm-start must be 'zoo', got {self.warm_start!r}.")
        if not self.study.strip():
            raise ValueError("--study is empty; pass a study name.")
        if self.batch_size > self.train_size:
            raise ValueError(
                f"--batch-size {self.batch_size} exceeds --train-size "
                f"{self.train_size}; lower the batch size or raise the train size."
            )
        self._check_training()

    def _check_training(self) -> None:
        for flag, value, zero_ok in (
            ("--lr", self.lr, False),
            ("--weight-decay", self.weight_decay, True),
        ):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and (value > 0 or (zero_ok and value == 0))):
                bound = ">= 0" if zero_ok else "> 0"
                raise ValueError(f"{flag} must be a finite number {bound}, got {value!r}.")
        check_precision(self.precision, "--precision")
        if self.epoch_size is None:
            # Frozen, so the resolved default is set the way dataclasses set fields.
            object.__setattr__(self, "epoch_size", min(DEFAULT_EPOCH_SIZE, self.train_size))
        size = self.epoch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < self.batch_size:
            raise ValueError(
                f"--epoch-size must be an integer of at least --batch-size ({self.batch_size}), "
                f"got {size!r}."
            )
        if size > self.train_size:
            raise ValueError(
                f"--epoch-size {size} exceeds --train-size {self.train_size}; lower the epoch "
                "size or raise the train size."
            )

    @property
    def evaluated_epochs(self) -> set[int]:
        """Epochs after which a trial is evaluated: where the pruner decides, and the last."""
        epochs, rung = {self.epochs}, 1
        if self.prunes:
            while rung < self.epochs:
                epochs.add(rung)
                rung *= PRUNING_FACTOR
        else:
            # Nothing is decided between epochs, so evaluating is only for the learning curves.
            epochs.update(range(1, self.epochs))
        return epochs

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def prunes(self) -> bool:
        """Whether successive halving prunes: not for multi-objective or random-sample studies."""
        return not self.multi_objective and self.sampler != "random"

    @property
    def directions(self) -> list[optuna.study.StudyDirection]:
        return [OBJECTIVES[name][1] for name in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [OBJECTIVES[name][0] for name in self.objectives]

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            epoch_size=self.epoch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=seed,
            precision=self.precision,
        )

    def study_settings(self) -> dict[str, Any]:
        """Return the settings that define the study's results; they must match on resume."""
        return {
            "epochs": self.epochs,
            "train_size": self.train_size,
            "epoch_size": self.epoch_size,
            "val_size": self.val_size,
            "batch_size": self.batch_size,
            "max_mflops": self.max_mflops,
            "min_mflops": self.min_mflops,
            "max_params": self.max_params,
            "objectives": list(self.objectives),
            "sampler": self.sampler,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "precision": self.precision,
            "stem_w": self.stem_w,
            "stem_stride": self.stem_stride,
            "image_size": IMAGE_SIZE,
            "space": self.space.to_dict(),
        }

    def trial_seed(self, number: int) -> int:
        """Training seed of trial `number`: distinct per trial, reproducible per study seed."""
        return (self.seed * 1_000_003 + number) % (2**31 - 1)


def _check_objectives(objectives: Sequence[str]) -> None:
    valid = ", ".join(OBJECTIVES)
    if isinstance(objectives, str) or not objectives:
        raise ValueError(f"--objectives must name one or more of {valid}, got {objectives!r}.")
    unknown = [name for name in objectives if name not in OBJECTIVES]
    if unknown:
        raise ValueError(f"--objectives: unknown objective {unknown[0]!r}; choose from {valid}.")
    if len(set(objectives)) != len(objectives):
        raise ValueError(f"--objectives names an objective twice: {','.join(objectives)}.")
    if objectives[0] not in ("accuracy", "error") or any(
        name in ("accuracy", "error") for name in objectives[1:]
    ):
        raise ValueError(
            f"--objectives {','.join(objectives)}: start with accuracy or error (not both), "
            "optionally followed by mflops and/or params, e.g. --objectives error,mflops."
        )
    if len(objectives) > 1 and objectives[0] != "error":
        raise ValueError(
            f"--objectives {','.join(objectives)}: a multi-objective study minimizes every "
            "objective, so use error instead of accuracy, e.g. --objectives error,mflops."
        )


class ArchitectureRejected(optuna.TrialPruned):
    """A sampled architecture broke a rule (budget, stage count) and was not trained."""


def count_finished(study: optuna.Study) -> int:
    """Count complete and pruned trials that were trained; rejected samples do not count."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(not is_rejected(trial) for trial in study.get_trials(deepcopy=False, states=states))


def describe_search(config: SearchConfig) -> str:
    """Return the space, sampler, objectives and pruning of a search, in one line."""
    objectives = ", ".join(config.metric_names)
    if config.multi_objective:
        pruning = "pruning off (Optuna does not prune multi-objective studies)"
    elif not config.prunes:
        pruning = "pruning off (a random sample trains every model fully, for honest EDFs)"
    elif config.epochs == 1:
        pruning = "pruning off: with 1 epoch per trial, no trial can stop early"
    else:
        # Each epoch drops the last partial batch, as regnas.engine.Trainer does.
        images = config.epoch_size // config.batch_size * config.batch_size
        pruning = (
            f"successive halving over {count_text(config.epochs, 'epoch')} of {images:,} images"
        )
    return (
        f"space {config.space.name}, {config.sampler} sampler, objectives {objectives}, {pruning}"
    )


def trial_counts_text(study: optuna.Study) -> str:
    """Return how many samples were rejected and how many trials reused an earlier result."""
    trials = study.get_trials(deepcopy=False)
    rejected = sum(is_rejected(trial) for trial in trials)
    duplicates = sum(DUPLICATE_KEY in trial.user_attrs for trial in trials)
    failed = [trial for trial in trials if trial.state == optuna.trial.TrialState.FAIL]
    interrupted = sum(trial.user_attrs.get("fail_reason") == INTERRUPTED for trial in failed)
    return (
        f"{count_text(rejected, 'sampled architecture')} {'was' if rejected == 1 else 'were'} "
        f"rejected before training ({REJECTION_CAUSE}), "
        f"{count_text(duplicates, 'trial')} reused the result of an identical architecture, "
        f"{count_text(len(failed) - interrupted, 'trial')} failed, "
        f"and {count_text(interrupted, 'trial')} {'was' if interrupted == 1 else 'were'} "
        "interrupted."
    )


def open_study(config: SearchConfig, storage_url: str, worker: int = 0) -> optuna.Study:
    """Create or load the study, and check that a resumed study keeps its settings.

    Args:
        config: The search settings.
        storage_url: Where the study lives.
        worker: Index of the calling worker; it offsets the sampler seed so that workers
            sharing a study do not propose the same parameters.

    Raises:
        ValueError: The study exists with other settings, space or objectives.
    """
    storage = open_storage(storage_url)
    sampler = make_sampler(config, worker)
    pruner: optuna.pruners.BasePruner
    if not config.prunes:
        # Optuna cannot prune multi-objective trials (Trial.report rejects them), and pruning
        # would bias the error distribution of a random sample.
        pruner = optuna.pruners.NopPruner()
    else:
        # One bracket of successive halving, not Hyperband: Hyperband's other brackets prune
        # later or never, and so train several times more images per trial on average.
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=PRUNING_FACTOR, min_early_stopping_rate=0
        )
    exists = config.study in optuna.get_all_study_names(storage)
    if exists:
        study = optuna.load_study(
            study_name=config.study, storage=storage, sampler=sampler, pruner=pruner
        )
    else:
        study = optuna.create_study(
            study_name=config.study,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            directions=config.directions,
            load_if_exists=True,
        )
    settings = config.study_settings()
    stored = study.user_attrs.get(SETTINGS_KEY)
    if stored is None and not (exists and study.get_trials(deepcopy=False)):
        study.set_metric_names(config.metric_names)
        study.set_user_attr(SETTINGS_KEY, settings)
        study.set_user_attr(VERSIONS_KEY, package_versions())
        if config.space_config is not None:
            study.set_user_attr(SPACE_CONFIG_KEY, str(Path(config.space_config).resolve()))
        return study
    stored = upgrade_settings(stored or {})
    if stored != settings or study.directions != config.directions:
        space_config = study.user_attrs.get(SPACE_CONFIG_KEY)
        raise ValueError(settings_mismatch(config.study, stored, settings, space_config))
    return study


def make_sampler(config: SearchConfig, worker: int = 0) -> optuna.samplers.BaseSampler:
    """Return the search's sampler; each worker's seed differs, so workers explore apart.

    TPE runs multivariate for multi-objective studies too, where Optuna's default is
    independent. Every named space suggests one fixed set of parameters, so the multivariate
    model covers all of them and never falls back to independent sampling.
    """
    seed = config.seed + worker
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def upgrade_settings(stored: dict[str, Any]) -> dict[str, Any]:
    """Fill in the settings that studies made by regnas 0.1 did not store, with their values."""
    upgraded = {
        "min_mflops": None,
        "max_params": None,
        "objectives": ["accuracy"],
        "sampler": "tpe",
        "precision": "float32",
        **stored,
    }
    # Before epoch_size existed, every epoch was one pass over the training images.
    upgraded.setdefault("epoch_size", upgraded.get("train_size"))
    space = dict(upgraded.get("space") or {})
    if space and "name" not in space:
        upgraded["space"] = {"name": "regnetx", **space}
    return upgraded


def settings_mismatch(
    study: str, stored: dict[str, Any], settings: dict[str, Any], space_config: str | None = None
) -> str:
    """Return the error for a resumed study whose settings changed: what, and the ways out."""
    changed = []
    for key in sorted(set(stored) | set(settings)):
        old, new = stored.get(key), settings.get(key)
        if old == new:
            continue
        if key == "space" and isinstance(old, dict) and isinstance(new, dict):
            changed += _space_changes(old, new)
        else:
            changed.append(f"{key}: stored {old!r}, now {new!r}")
    return (
        f"Study {study!r} was created with other settings ({'; '.join(changed)}). To resume "
        f"it, rerun with the settings it was created with ({stored_flags(stored, space_config)}); "
        "to start afresh with the new settings, pass a new --study name."
    )


_FLAG_SETTINGS = (
    "epochs",
    "train_size",
    "epoch_size",
    "val_size",
    "batch_size",
    "max_mflops",
    "min_mflops",
    "max_params",
    "lr",
    "weight_decay",
    "precision",
)


def _space_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    if old.get("name") != new.get("name"):
        # Another space has other keys; listing them all would hide the one that matters.
        return [f"space: stored {old.get('name')!r}, now {new.get('name')!r}"]
    return [
        f"space.{name}: stored {old.get(name)!r}, now {new.get(name)!r}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def stored_flags(stored: dict[str, Any], space_config: str | None = None) -> str:
    """Return the command-line flags that reproduce stored settings."""
    flags = [
        f"--{key.replace('_', '-')} {stored[key]}"
        for key in _FLAG_SETTINGS
        if stored.get(key) is not None
    ]
    flags.append(f"--objectives {','.join(stored.get('objectives', ['accuracy']))}")
    flags.append(f"--sampler {stored.get('sampler', 'tpe')}")
    space = stored.get("space") or {}
    if space.get("name") in SPACE_NAMES:
        flags.append(f"--space {space['name']}")
        if space_config is not None:
            flags.append(f"--space-config {space_config}")
        elif make_space(space["name"]).to_dict() != space:
            flags.append(
                f"and a --space-config file with the ranges stored in the study's "
                f"{SETTINGS_KEY!r} attribute"
            )
    return " ".join(flags)


def check_budget(config: SearchConfig) -> None:
    """Fail early when even the cheapest architecture of the space breaks a maximum budget."""
    spec = config.space.smallest_spec(config.stem_w, config.stem_stride)
    cx = complexity(spec, IMAGE_SIZE)
    mflops = cx["flops"] / 1e6
    if config.max_mflops is not None and mflops > config.max_mflops:
        raise ValueError(
            f"--max-mflops {config.max_mflops} is below the cheapest architecture of the search "
            f"space ({mflops:.2f} MFLOPs); raise it to at least {math.ceil(mflops * 100) / 100}."
        )
    if config.max_params is not None and cx["params"] > config.max_params:
        raise ValueError(
            f"--max-params {config.max_params} is below the smallest architecture of the "
            f"search space ({cx['params']} parameters); raise it to at least {cx['params']}."
        )


Objective = Callable[[optuna.Trial], float | list[float]]


def make_objective(config: SearchConfig, device_data: DeviceData) -> Objective:
    """Return the Optuna objective: the quality after the last epoch, then any complexities."""

    def objective(trial: optuna.Trial) -> float | list[float]:
        try:
            # A retried trial starts with the user attributes of the failed one, and each write
            # below replaces one. NOTE: a retry that reuses a duplicate's result keeps the failed
            # run's compile_seconds and train_seconds, because Optuna cannot delete attributes.
            trial.set_user_attr(WORKER_HOST_KEY, socket.gethostname())
            trial.set_user_attr(WORKER_PID_KEY, os.getpid())
            return train_trial(trial)
        except optuna.exceptions.UpdateFinishedTrialError as error:
            raise TrialFailedElsewhere(
                f"Trial {trial.number} was marked failed by another process while this worker "
                "ran it (its heartbeat was older than the grace period, or regnas.status "
                "--fail-stale failed it)"
            ) from error
        except KeyboardInterrupt:
            # Optuna marks the trial FAIL and re-raises, and the reason records why it failed.
            # The trial may already be FAIL, failed by another process; the interrupt wins.
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trial.set_user_attr("fail_reason", INTERRUPTED)
            raise

    def train_trial(trial: optuna.Trial) -> float | list[float]:
        # Signals interrupt only compiling and training: an interrupt inside a storage write
        # leaves Optuna's session broken, so writes run first and a stop is checked after them.
        spec = sample_architecture(config, trial)
        original = find_duplicate(trial.study, trial.user_attrs[ARCHITECTURE_KEY], trial.number)
        if original is not None:
            return reuse_result(trial, original)
        seed = config.trial_seed(trial.number)
        trial.set_user_attr("train_seed", seed)
        trainer = Trainer(spec, config.train_config(seed), device_data)
        with StopRequest.interruptible():
            compile_seconds = trainer.compile()
        trial.set_user_attr("compile_seconds", round(compile_seconds, 3))

        train_seconds, accuracy = 0.0, float("nan")
        epochs = trainer.epochs(evaluate=config.evaluated_epochs)
        try:
            while True:
                with StopRequest.interruptible():
                    result = next(epochs, None)
                if result is None:
                    break
                train_seconds += result.train_seconds
                _record_epoch(trial, result, train_seconds)
                if math.isnan(result.eval_accuracy):
                    continue
                accuracy = result.eval_accuracy
                trial.set_user_attr("val_accuracy", accuracy)
                if not config.multi_objective:
                    trial.report(_quality(config, accuracy), result.epoch)
                    # After the last epoch pruning saves nothing, so the trial completes.
                    last = result.epoch == config.epochs
                    if config.prunes and not last and trial.should_prune():
                        raise optuna.TrialPruned(f"pruned after epoch {result.epoch}")
        except NonFiniteLossError as error:
            # Returning NaN marks this trial FAIL with a reason, and the search goes on.
            trial.set_user_attr("fail_reason", str(error))
            return (
                float("nan")
                if not config.multi_objective
                else [float("nan")] * len(config.objectives)
            )
        return objective_values(config, accuracy, trial.user_attrs)

    return objective


def _quality(config: SearchConfig, accuracy: float) -> float:
    return accuracy if config.objectives[0] == "accuracy" else 1.0 - accuracy


def objective_values(
    config: SearchConfig, accuracy: float, attrs: dict[str, Any]
) -> float | list[float]:
    """Return the trial's objective values from its validation accuracy and complexity."""
    values = [_quality(config, accuracy)]
    values += [float(attrs[name]) for name in config.objectives[1:]]
    return values if config.multi_objective else values[0]


def architecture_key(spec: AnyNetSpec) -> str:
    """Return a short digest that equal architectures share, whatever parameters gave them."""
    text = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_duplicate(study: optuna.Study, key: str, number: int) -> optuna.trial.FrozenTrial | None:
    """Return the earliest finished, trained trial of the architecture `key`, if any."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for trial in study.get_trials(deepcopy=False, states=states):
        attrs = trial.user_attrs
        if (
            trial.number != number
            and attrs.get(ARCHITECTURE_KEY) == key
            and not is_rejected(trial)
            and DUPLICATE_KEY not in attrs
        ):
            return trial
    return None


def reuse_result(trial: optuna.Trial, original: optuna.trial.FrozenTrial) -> float | list[float]:
    """Finish `trial` with the recorded result of `original`, which has the same architecture.

    Raises:
        optuna.TrialPruned: The original was pruned, so this one is too.
    """
    trial.set_user_attr(DUPLICATE_KEY, original.number)
    for name in ("val_accuracy", "epochs_trained"):
        if name in original.user_attrs:
            trial.set_user_attr(name, original.user_attrs[name])
    if original.state == optuna.trial.TrialState.PRUNED:
        raise optuna.TrialPruned(f"duplicate of trial {original.number}, which was pruned")
    assert original.values is not None
    return list(original.values) if len(original.values) > 1 else original.values[0]


def sample_architecture(config: SearchConfig, trial: optuna.Trial) -> AnyNetSpec:
    """Sample an architecture, expand it, and store it with its complexity.

    Raises:
        ArchitectureRejected: The architecture breaks the stage limit or a complexity budget.
    """
    spec, extra = config.space.sample(trial, config.stem_w, config.stem_stride)
    cx = complexity(spec, IMAGE_SIZE)
    mflops = cx["flops"] / 1e6
    trial.set_user_attr("architecture", spec.to_dict())
    trial.set_user_attr(ARCHITECTURE_KEY, architecture_key(spec))
    for name, value in extra.items():
        trial.set_user_attr(name, value)
    trial.set_user_attr("stage_depths", spec.stage_depths)
    trial.set_user_attr("stage_widths", spec.stage_widths)
    trial.set_user_attr("stage_group_ws", [stage.group_w for stage in spec.stages])
    trial.set_user_attr("mflops", round(mflops, 4))
    trial.set_user_attr("params", cx["params"])
    trial.set_user_attr("acts", cx["acts"])
    for reason, excess in budget_excess(config, spec, mflops, cx["params"]):
        # Constraint values > 0 mark the sample infeasible, so the sampler learns to avoid that
        # region. They are set for every sample, so that feasible samples are marked too.
        trial.set_constraint(reason, excess)
    reasons = rejection_reasons(config, spec, mflops, cx["params"])
    if reasons:
        trial.set_user_attr(REJECTED_KEY, "; ".join(reasons))
        raise ArchitectureRejected("; ".join(reasons))
    return spec


def sample_at_random(
    config: SearchConfig, count: int, seed: int = 0
) -> list[tuple[optuna.trial.FrozenTrial, AnyNetSpec]]:
    """Sample `count` architectures within the config's limits at random, in a study in memory.

    Returns:
        Each accepted sample's trial (parameters and attributes) with its architecture.

    Raises:
        ValueError: Fewer than `count` of 100 x `count` samples were within the limits.
    """
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    samples: list[tuple[optuna.trial.FrozenTrial, AnyNetSpec]] = []
    for _ in range(100 * count):
        if len(samples) == count:
            return samples
        trial = study.ask()
        try:
            spec = sample_architecture(config, trial)
        except ArchitectureRejected:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        samples.append((study.tell(trial, 0.0), spec))
    if len(samples) < count:
        raise ValueError(
            f"Only {len(samples)} of {100 * count} random samples of the {config.space.name} "
            "space are within its limits; widen the budget or the ranges."
        )
    return samples


def budget_excess(
    config: SearchConfig, spec: AnyNetSpec, mflops: float, params: int
) -> list[tuple[str, float]]:
    """Return (constraint name, excess) pairs; an excess above 0 breaks the constraint."""
    excess = [("stages", float(len(spec.stages) - config.space.max_stages))]
    if config.max_mflops is not None:
        excess.append(("max_mflops", mflops - config.max_mflops))
    if config.min_mflops is not None:
        excess.append(("min_mflops", config.min_mflops - mflops))
    if config.max_params is not None:
        # In millions, so that the sampler weighs it like the MFLOPs constraints.
        excess.append(("max_params", (params - config.max_params) / 1e6))
    return excess


def rejection_reasons(
    config: SearchConfig, spec: AnyNetSpec, mflops: float, params: int
) -> list[str]:
    """Return why an architecture may not be trained; empty when it fits every limit."""
    reasons = []
    if len(spec.stages) > config.space.max_stages:
        reasons.append(f"{len(spec.stages)} stages, more than {config.space.max_stages}")
    if config.max_mflops is not None and mflops > config.max_mflops:
        reasons.append(f"{mflops:.2f} MFLOPs, above --max-mflops {config.max_mflops}")
    if config.min_mflops is not None and mflops < config.min_mflops:
        reasons.append(f"{mflops:.2f} MFLOPs, below --min-mflops {config.min_mflops}")
    if config.max_params is not None and params > config.max_params:
        reasons.append(f"{params} parameters, above --max-params {config.max_params}")
    return reasons


def _record_epoch(trial: optuna.Trial, result: EpochResult, train_seconds: float) -> None:
    trial.set_user_attr("epochs_trained", result.epoch)
    trial.set_user_attr("train_seconds", round(train_seconds, 3))
    trial.set_user_attr("images_per_second", round(result.images_per_second, 1))
    trial.set_user_attr("train_loss", round(result.train_loss, 5))


def format_trial(trial: optuna.trial.FrozenTrial, study: optuna.Study) -> str:
    """Return the one-line summary logged for every finished trial."""
    attrs = trial.user_attrs
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    if is_rejected(trial):
        value = f"rejected ({attrs[REJECTED_KEY]})"
    elif trial.state == optuna.trial.TrialState.FAIL:
        value = f"failed ({attrs.get('fail_reason', 'see the log above')})"
    else:
        accuracy = validation_accuracy(trial)
        value = f"val_acc {accuracy:.4f}" if accuracy is not None else "no epoch finished"
        value += f" after {count_text(attrs.get('epochs_trained', 0), 'epoch')}"
        if DUPLICATE_KEY in attrs:
            value += f", reused from trial {attrs[DUPLICATE_KEY]} (same architecture)"
    timing = f"{seconds:.1f}s"
    if "compile_seconds" in attrs:
        timing += (
            f" (compile {attrs['compile_seconds']:.1f}s, "
            f"train {attrs.get('train_seconds', 0.0):.1f}s)"
        )
    return (
        f"trial {trial.number} {trial.state.name.lower()}: {value}, "
        f"{attrs.get('mflops', float('nan')):.2f} MFLOPs, {timing}; {best_text(study)}"
    )


def validation_accuracy(trial: optuna.trial.FrozenTrial) -> float | None:
    """Return the validation accuracy after the last epoch the trial trained, if any."""
    if "val_accuracy" in trial.user_attrs:
        return float(trial.user_attrs["val_accuracy"])
    # Studies made by regnas 0.1 kept the accuracy only as the value and intermediate values.
    if trial.values is not None and len(trial.values) == 1:
        return trial.values[0]
    if not trial.intermediate_values:
        return None
    return trial.intermediate_values[max(trial.intermediate_values)]


def best_text(study: optuna.Study) -> str:
    """Return the best trial of a single-objective study, or the Pareto front's size."""
    if len(study.directions) > 1:
        front = study.best_trials
        return (
            f"Pareto front of {count_text(len(front), 'trial')}"
            if front
            else "no completed trial yet"
        )
    try:
        best = study.best_trial
    except ValueError:
        return "no completed trial yet"
    names = study.metric_names
    label = f"{names[0]} " if names and names[0] != "val_accuracy" else ""
    return f"best {label}{best.value:.4f} (trial {best.number})"


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Return the completed trials that no other trial beats in both error and MFLOPs.

    Works on every study from its stored attributes, single-objective ones included. Trials
    that reused an earlier result are left out, so every architecture appears once. The
    result is sorted by MFLOPs.
    """
    points = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        accuracy = validation_accuracy(trial)
        if accuracy is None or not math.isfinite(accuracy) or "mflops" not in trial.user_attrs:
            continue
        if DUPLICATE_KEY not in trial.user_attrs:
            points.append((float(trial.user_attrs["mflops"]), 1.0 - accuracy, trial))
    points.sort(key=lambda point: (point[0], point[1]))
    front, best_error = [], math.inf
    for _, error, trial in points:
        if error < best_error:
            front.append(trial)
            best_error = error
    return front
