"""Read results back from a study: the best trial as an architecture document."""

from __future__ import annotations

from typing import Any

import optuna

from regnas.archive import architecture_document
from regnas.regnet import RegNetParams
from regnas.spec import AnyNetSpec
from regnas.storage import load_existing_study, mask_password, open_storage, resolve_storage
from regnas.study import IMAGE_SIZE, SETTINGS_KEY, VERSIONS_KEY
from regnas.versions import package_versions


def export_best(study_name: str, storage: str | None) -> dict[str, Any]:
    """Return the architecture document of the best completed trial of a study.

    Raises:
        ValueError: The storage or study does not exist, or the study has no completed trial.
    """
    storage_url = resolve_storage(storage)
    study = load_existing_study(study_name, open_storage(storage_url, create=False), storage_url)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    complete = [trial for trial in complete if "architecture" in trial.user_attrs]
    if not complete:
        states = [trial.state.name for trial in study.get_trials(deepcopy=False)]
        counts = {state: states.count(state) for state in sorted(set(states))}
        raise ValueError(
            f"Study {study_name!r} has no completed trial yet (trials by state: {counts or 0}). "
            f"Run 'python -m regnas.search --study {study_name}' first."
        )

    best = max(complete, key=lambda trial: (trial.value, -trial.number))
    attrs = best.user_attrs
    spec = AnyNetSpec.from_dict(attrs["architecture"])
    regnet = RegNetParams(**attrs["regnet"]) if attrs.get("regnet") else None
    settings = study.user_attrs.get(SETTINGS_KEY, {})
    metrics = {
        "val_accuracy": best.value,
        "epochs": attrs.get("epochs_trained"),
        "train_size": settings.get("train_size"),
        "val_size": settings.get("val_size"),
        "mflops": attrs.get("mflops"),
        "train_seconds": attrs.get("train_seconds"),
        "images_per_second": attrs.get("images_per_second"),
    }
    provenance = {
        "study": study_name,
        "trial": best.number,
        "storage": mask_password(storage_url),
        "seed": attrs.get("train_seed"),
        "settings": settings,
        "versions": study.user_attrs.get(VERSIONS_KEY) or package_versions(),
    }
    return architecture_document(
        spec, regnet, settings.get("image_size", IMAGE_SIZE), metrics, provenance
    )
