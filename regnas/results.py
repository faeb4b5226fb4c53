"""Read results back from a study: the best trial or the Pareto front, as documents."""

from __future__ import annotations

import math
from typing import Any

import optuna

from regnas.archive import architecture_document
from regnas.regnet import RegNetParams
from regnas.spec import AnyNetSpec
from regnas.storage import load_existing_study, mask_password, open_storage, resolve_storage
from regnas.study import (
    IMAGE_SIZE,
    VERSIONS_KEY,
    pareto_front,
    stored_flags,
    validation_accuracy,
)
from regnas.trials import DUPLICATE_KEY, SETTINGS_KEY
from regnas.versions import package_versions


def export_best(study_name: str, storage: str | None) -> dict[str, Any]:
    """Return the architecture document of the trained trial with the best validation accuracy.

    This works for multi-objective studies too, where it picks the most accurate trial of the
    Pareto front; ties go to the earlier trial.

    Raises:
        ValueError: The storage or study does not exist, or the study has no completed trial.
    """
    storage_url, study = _load(study_name, storage)
    best = max(_trained(study), key=lambda trial: (_accuracy(trial), -trial.number))
    return _document(study, best, storage_url)


def export_top_k(study_name: str, storage: str | None, k: int) -> list[dict[str, Any]]:
    """Return the documents of the `k` trained trials with the best validation accuracy.

    Trials are ranked as in `export_best`, so the first document is the one it returns. A study
    with fewer than `k` trained trials returns them all.

    Raises:
        ValueError: `k` is below 1, the storage or study does not exist, or the study has no
            completed trial.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, the number of trials to export; got {k!r}.")
    storage_url, study = _load(study_name, storage)
    ranked = sorted(_trained(study), key=lambda trial: (-_accuracy(trial), trial.number))
    return [_document(study, trial, storage_url) for trial in ranked[:k]]


def export_pareto(study_name: str, storage: str | None) -> list[dict[str, Any]]:
    """Return the documents of the trials on the error-MFLOPs Pareto front, cheapest first.

    Raises:
        ValueError: The storage or study does not exist, or the study has no completed trial.
    """
    storage_url, study = _load(study_name, storage)
    _trained(study)
    return [_document(study, trial, storage_url) for trial in pareto_front(study)]


def _load(study_name: str, storage: str | None) -> tuple[str, optuna.Study]:
    storage_url = resolve_storage(storage)
    study = load_existing_study(study_name, open_storage(storage_url, create=False), storage_url)
    return storage_url, study


def _accuracy(trial: optuna.trial.FrozenTrial) -> float:
    accuracy = validation_accuracy(trial)
    return accuracy if accuracy is not None and math.isfinite(accuracy) else -math.inf


def _trained(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    complete = [trial for trial in complete if "architecture" in trial.user_attrs]
    if not complete:
        states = [trial.state.name for trial in study.get_trials(deepcopy=False)]
        counts = {state: states.count(state) for state in sorted(set(states))}
        stored = study.user_attrs.get(SETTINGS_KEY)
        flags = f" {stored_flags(stored)}" if isinstance(stored, dict) else ""
        raise ValueError(
            f"Study {study.study_name!r} has no completed trial yet (trials by state: "
            f"{counts or 0}). Run 'python -m regnas.search --study {study.study_name}{flags}' "
            "first."
        )
    # A trial that reused an identical architecture's result adds nothing to export.
    return [trial for trial in complete if DUPLICATE_KEY not in trial.user_attrs] or complete


def _document(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, storage_url: str
) -> dict[str, Any]:
    attrs = trial.user_attrs
    spec = AnyNetSpec.from_dict(attrs["architecture"])
    regnet = RegNetParams(**attrs["regnet"]) if attrs.get("regnet") else None
    settings = study.user_attrs.get(SETTINGS_KEY, {})
    metrics = {
        "val_accuracy": validation_accuracy(trial),
        "epochs": attrs.get("epochs_trained"),
        "train_size": settings.get("train_size"),
        # Studies from before epoch_size trained every epoch on all train_size images.
        "epoch_size": settings.get("epoch_size", settings.get("train_size")),
        "val_size": settings.get("val_size"),
        "mflops": attrs.get("mflops"),
        "train_seconds": attrs.get("train_seconds"),
        "images_per_second": attrs.get("images_per_second"),
    }
    provenance = {
        "study": study.study_name,
        "trial": trial.number,
        "storage": mask_password(storage_url),
        "seed": attrs.get("train_seed"),
        "settings": settings,
        "versions": study.user_attrs.get(VERSIONS_KEY) or package_versions(),
    }
    return architecture_document(
        spec, regnet, settings.get("image_size", IMAGE_SIZE), metrics, provenance
    )
