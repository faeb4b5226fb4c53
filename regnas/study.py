"""A RegNet search as an Optuna study: settings, sampling, budget checks, the objective, logging.

`regnas.workers.run_search` drives it. The study is the unit of resumption: rerunning with the
same name and storage continues until the study contains `trials` finished trials.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import logging
import math
from typing import Any

import optuna

from regnas.cli import StopRequest
from regnas.complexity import complexity
from regnas.engine import DeviceData, EpochResult, NonFiniteLossError, TrainConfig, Trainer
from regnas.space import RegNetSpace
from regnas.spec import AnyNetSpec
from regnas.storage import open_storage
from regnas.versions import package_versions


_logger = logging.getLogger(__name__)

DEFAULT_STUDY = "regnetx-fashion-mnist"
IMAGE_SIZE = 28
SETTINGS_KEY = "regnas.settings"
VERSIONS_KEY = "regnas.versions"
REJECTED_KEY = "rejected"
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
        epochs: Training epochs per trial, which is also Hyperband's maximum resource.
        train_size: Training images per trial, drawn from the official training set.
        val_size: Validation images, held out from the official training set.
        batch_size: Images per SGD step.
        max_mflops: Samples above this many MFLOPs at 28x28 are rejected before compiling.
        data_dir: Directory with the Fashion-MNIST IDX files; None searches the defaults.
        stem_w: Stem width of every sampled network.
        stem_stride: Stem stride of every sampled network.
        space: Ranges of the RegNet parameters.
        lr: Peak learning rate.
        weight_decay: L2 penalty on kernels.
    """

    study: str = DEFAULT_STUDY
    storage: str | None = None
    trials: int = 200
    seed: int = 0
    epochs: int = 4
    train_size: int = 10_000
    val_size: int = 5_000
    batch_size: int = 128
    max_mflops: float | None = 5.0
    data_dir: str | None = None
    # Stem stride 1 keeps 28x28 after the stem, so four stride-2 stages end at 2x2 and no stage
    # before the last one runs at 1x1, where a 3x3 convolution reads mostly padding.
    stem_w: int = 16
    stem_stride: int = 1
    space: RegNetSpace = dataclasses.field(default_factory=RegNetSpace)
    lr: float = 0.1
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        for name in ("trials", "epochs", "train_size", "val_size", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be a positive integer, got {value!r}."
                )
        if self.max_mflops is not None and not (
            math.isfinite(self.max_mflops) and self.max_mflops > 0
        ):
            raise ValueError(f"--max-mflops must be a positive number, got {self.max_mflops!r}.")
        if not self.study.strip():
            raise ValueError("--study is empty; pass a study name.")
        if self.batch_size > self.train_size:
            raise ValueError(
                f"--batch-size {self.batch_size} exceeds --train-size "
                f"{self.train_size}; lower the batch size or raise the train size."
            )

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=seed,
        )

    def study_settings(self) -> dict[str, Any]:
        """Return the settings that define the study's results; they must match on resume."""
        return {
            "epochs": self.epochs,
            "train_size": self.train_size,
            "val_size": self.val_size,
            "batch_size": self.batch_size,
            "max_mflops": self.max_mflops,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "stem_w": self.stem_w,
            "stem_stride": self.stem_stride,
            "image_size": IMAGE_SIZE,
            "space": self.space.to_dict(),
        }

    def trial_seed(self, number: int) -> int:
        """Training seed of trial `number`: distinct per trial, reproducible per study seed."""
        return (self.seed * 1_000_003 + number) % (2**31 - 1)


class ArchitectureRejected(optuna.TrialPruned):
    """A sampled architecture broke a rule (budget, stage count) and was not trained."""


def is_rejected(trial: optuna.trial.FrozenTrial) -> bool:
    return REJECTED_KEY in trial.user_attrs


def count_finished(study: optuna.Study) -> int:
    """Count complete and pruned trials that were trained; rejected samples do not count."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(not is_rejected(trial) for trial in study.get_trials(deepcopy=False, states=states))


def open_study(config: SearchConfig, storage_url: str, worker: int = 0) -> optuna.Study:
    """Create or load the study, and check that a resumed study keeps its settings.

    Args:
        config: The search settings.
        storage_url: Where the study lives.
        worker: Index of the calling worker; it offsets the sampler seed so that workers
            sharing a study do not propose the same parameters.
    """
    storage = open_storage(storage_url)
    sampler = optuna.samplers.TPESampler(seed=config.seed + worker, multivariate=True)
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=config.epochs, reduction_factor=3
    )
    study = optuna.create_study(
        study_name=config.study,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise ValueError(
            f"Study {config.study!r} exists with other objectives; pick a new --study name."
        )

    settings = config.study_settings()
    stored = study.user_attrs.get(SETTINGS_KEY)
    if stored is None:
        study.set_user_attr(SETTINGS_KEY, settings)
        study.set_user_attr(VERSIONS_KEY, package_versions())
    elif stored != settings:
        changed = [
            f"{key}: stored {stored.get(key)!r}, now {settings.get(key)!r}"
            for key in sorted(set(stored) | set(settings))
            if stored.get(key) != settings.get(key)
        ]
        raise ValueError(
            f"Study {config.study!r} was created with other settings ({'; '.join(changed)}). "
            "Rerun with the stored settings to resume it, or pass a new --study name."
        )
    return study


def check_budget(config: SearchConfig) -> None:
    """Fail early when even the cheapest architecture of the space exceeds --max-mflops."""
    if config.max_mflops is None:
        return
    spec = config.space.smallest().to_anynet(stem_w=config.stem_w, stem_stride=config.stem_stride)
    mflops = complexity(spec, IMAGE_SIZE)["flops"] / 1e6
    if mflops > config.max_mflops:
        raise ValueError(
            f"--max-mflops {config.max_mflops} is below the cheapest architecture of the search "
            f"space ({mflops:.2f} MFLOPs); raise it to at least {math.ceil(mflops * 100) / 100}."
        )


def make_objective(
    config: SearchConfig, device_data: DeviceData
) -> Callable[[optuna.Trial], float]:
    """Return the Optuna objective: validation accuracy after the last epoch trained."""

    def objective(trial: optuna.Trial) -> float:
        try:
            return train_trial(trial)
        except KeyboardInterrupt:
            # Optuna marks the trial FAIL and re-raises, and the reason records why it failed.
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C or SIGTERM)")
            raise

    def train_trial(trial: optuna.Trial) -> float:
        # Signals interrupt only compiling and training: an interrupt inside a storage write
        # leaves Optuna's session broken, so writes run first and a stop is checked after them.
        spec = sample_architecture(config, trial)
        seed = config.trial_seed(trial.number)
        trial.set_user_attr("train_seed", seed)
        trainer = Trainer(spec, config.train_config(seed), device_data)
        with StopRequest.interruptible():
            compile_seconds = trainer.compile()
        trial.set_user_attr("compile_seconds", round(compile_seconds, 3))

        train_seconds, accuracy = 0.0, float("nan")
        epochs = trainer.epochs()
        try:
            while True:
                with StopRequest.interruptible():
                    result = next(epochs, None)
                if result is None:
                    break
                train_seconds += result.train_seconds
                accuracy = result.eval_accuracy
                _record_epoch(trial, result, train_seconds)
                trial.report(accuracy, result.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {result.epoch}")
        except NonFiniteLossError as error:
            # Returning NaN marks this trial FAIL with a reason, and the search goes on.
            trial.set_user_attr("fail_reason", str(error))
            return float("nan")
        return accuracy

    return objective


def sample_architecture(config: SearchConfig, trial: optuna.Trial) -> AnyNetSpec:
    """Sample RegNet parameters, expand them, and store the architecture and its complexity.

    Raises:
        ArchitectureRejected: The architecture breaks the stage limit or the MFLOPs budget.
    """
    params = config.space.suggest(trial)
    spec = params.to_anynet(stem_w=config.stem_w, stem_stride=config.stem_stride)
    cx = complexity(spec, IMAGE_SIZE)
    mflops = cx["flops"] / 1e6
    trial.set_user_attr("architecture", spec.to_dict())
    trial.set_user_attr("regnet", params.to_dict())
    trial.set_user_attr("stage_depths", spec.stage_depths)
    trial.set_user_attr("stage_widths", spec.stage_widths)
    trial.set_user_attr("stage_group_ws", [stage.group_w for stage in spec.stages])
    trial.set_user_attr("mflops", round(mflops, 4))
    trial.set_user_attr("params", cx["params"])
    trial.set_user_attr("acts", cx["acts"])

    # Constraint values > 0 mark the sample infeasible, so TPE learns to avoid that region.
    excess_stages = len(spec.stages) - config.space.max_stages
    trial.set_constraint("stages", excess_stages)
    if excess_stages > 0:
        _reject(trial, f"{len(spec.stages)} stages, more than {config.space.max_stages}")
    if config.max_mflops is not None:
        trial.set_constraint("mflops", mflops - config.max_mflops)
        if mflops > config.max_mflops:
            _reject(trial, f"{mflops:.2f} MFLOPs, above --max-mflops {config.max_mflops}")
    return spec


def _reject(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(REJECTED_KEY, reason)
    raise ArchitectureRejected(reason)


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
        last = trial.value if trial.value is not None else _last_intermediate(trial)
        value = f"val_acc {last:.4f}" if last is not None else "no epoch finished"
        value += f" after {attrs.get('epochs_trained', 0)} epoch(s)"
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


def _last_intermediate(trial: optuna.trial.FrozenTrial) -> float | None:
    if not trial.intermediate_values:
        return None
    return trial.intermediate_values[max(trial.intermediate_values)]


def best_text(study: optuna.Study) -> str:
    try:
        best = study.best_trial
    except ValueError:
        return "no completed trial yet"
    return f"best {best.value:.4f} (trial {best.number})"
