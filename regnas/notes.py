"""Architecture notes and figures for optuna-dashboard, written into the study's storage.

`save_trial_note` gives a trial a Markdown note with its stage table, which the dashboard shows on
the trial's page. `save_study_figures` stores three regnas figures that the dashboard does not
draw itself: error EDF, error versus MFLOPs, and the stage widths of the best models. The
dashboard shows them on the study's page. Both can run in a search worker after every trial:

- `save_trial_note` reads the study's user attributes and all study system attributes (where
  optuna-dashboard keeps notes and figures), then writes two to three system attributes. On
  SQLite that is a few milliseconds plus the time to read the stored notes and figures.
- `save_study_figures` reads every trial and writes each figure as JSON, split by
  optuna-dashboard into chunks of about 2 kB, so its cost grows with the study. Call it from one
  process only, because two processes that save the same figure at once can interleave chunks.

Neither raises: a failure is logged as a warning with the trial or study, and the search goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
import logging
from typing import Any

import optuna

from regnas.cli import count_text
from regnas.complexity import complexity_by_part
from regnas.spec import AnyNetSpec
from regnas.trials import (
    DUPLICATE_KEY,
    FAIL_REASON_KEY,
    REJECTED_KEY,
    SETTINGS_KEY,
    ErrorSource,
    StudyTrials,
    error_source,
    image_size,
    is_rejected,
    last_intermediate,
    metric_labels,
)


_logger = logging.getLogger(__name__)

# Figures stored for the dashboard, by their regnas name; the graph object id is "regnas-NAME",
# so that saving again replaces the earlier version.
DASHBOARD_FIGURES = ("edf", "pareto", "widths")


def trial_note(
    trial: optuna.trial.FrozenTrial,
    input_size: int,
    metric_names: Sequence[str] | None = None,
    directions: Sequence[optuna.study.StudyDirection] = (optuna.study.StudyDirection.MAXIMIZE,),
) -> str:
    """Return a Markdown note for a trial: its outcome, its RegNet parameters and stage table.

    Args:
        trial: A trial whose user attributes contain ``architecture``.
        input_size: Side of the square input images in pixels, for resolutions and MFLOPs.
        metric_names: The study's metric names, or None when it set none.
        directions: The study's objective directions.

    Raises:
        ValueError: The trial stores no valid ``architecture``.
    """
    attrs = trial.user_attrs
    if "architecture" not in attrs:
        raise ValueError(f"Trial {trial.number} stores no 'architecture' user attribute.")
    spec = AnyNetSpec.from_dict(attrs["architecture"])

    source = error_source(metric_names, directions)
    outcome = _outcome(trial, source, metric_labels(metric_names, directions))
    lines = [f"### Trial {trial.number}: {outcome}", ""]
    summary = [f"{_number(attrs.get('mflops'), '.3f')} MFLOPs"]
    if isinstance(attrs.get("params"), int):
        summary.append(f"{attrs['params']:,} parameters")
    summary.append(f"input {input_size}x{input_size}x{spec.in_channels}")
    lines.append(", ".join(summary) + ".")
    if isinstance(attrs.get("regnet"), dict):
        regnet = ", ".join(
            f"{key} {_number(value, '.4g')}" for key, value in attrs["regnet"].items()
        )
        lines.extend(["", f"RegNet parameters: {regnet}."])
    if DUPLICATE_KEY in attrs:
        lines.extend(["", f"Same architecture as trial {attrs[DUPLICATE_KEY]}."])
    lines.extend(["", *stage_table(spec, input_size)])
    return "\n".join(lines) + "\n"


def stage_table(spec: AnyNetSpec, input_size: int) -> list[str]:
    """Return the rows of a Markdown table with one row per stem, stage and head."""
    parts = complexity_by_part(spec, input_size)
    sizes = spec.output_sizes(input_size)
    rows = [
        "| stage | depth | width | groups | group width | bottleneck width | stride | output | "
        "MFLOPs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| stem | | {spec.stem_w} | | | | {spec.stem_stride} | {_size(sizes[0])} | "
        f"{_mflops(parts[0])} |",
    ]
    for index, stage in enumerate(spec.stages, start=1):
        rows.append(
            f"| {index} | {stage.depth} | {stage.width} | {stage.groups} | {stage.group_w} | "
            f"{stage.inner_width} | {stage.stride} | {_size(sizes[index])} | "
            f"{_mflops(parts[index])} |"
        )
    rows.append(f"| head | | {spec.num_classes} | | | | | 1x1 | {_mflops(parts[-1])} |")
    total = sum(part["flops"] for part in parts)
    depth = sum(stage.depth for stage in spec.stages)
    rows.append(f"| total | {depth} | | | | | | | {total / 1e6:.3f} |")
    return rows


def save_trial_note(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    input_size: int | None = None,
) -> bool:
    """Store `trial_note` as the trial's optuna-dashboard note; usable as an Optuna callback.

    A trial without an ``architecture`` user attribute (it failed before sampling finished)
    gets no note. Saving again replaces the note, keeping optuna-dashboard's version count.

    Args:
        study: The study that contains `trial`.
        trial: The finished trial, as Optuna passes it to callbacks.
        input_size: Input side in pixels; None reads it from the study settings (default 28).

    Returns:
        Whether a note was saved. Errors are logged, not raised, so that a worker goes on.
    """
    try:
        if "architecture" not in trial.user_attrs:
            return False
        if input_size is None:
            input_size = image_size(study.user_attrs.get(SETTINGS_KEY))
        body = trial_note(trial, input_size, study.metric_names, study.directions)
        _save_note(study, trial, body)
    except Exception as error:
        # A note is a convenience: a storage hiccup or a malformed attribute must not stop the
        # search that called this. The traceback goes to the debug log only.
        _logger.warning(
            "Could not save the dashboard note of trial %d of study %r: %s",
            trial.number,
            study.study_name,
            error,
        )
        _logger.debug("Traceback of the failed note:", exc_info=True)
        return False
    return True


def save_trial_notes(study: optuna.Study) -> int:
    """Store a note on every trained trial of `study`; return how many.

    Rejected samples get none, as during a search.
    """
    input_size = image_size(study.user_attrs.get(SETTINGS_KEY))
    trials = [trial for trial in study.get_trials(deepcopy=False) if not is_rejected(trial)]
    return sum(save_trial_note(study, trial, input_size) for trial in trials)


def save_study_figures(
    study: optuna.Study, trial: optuna.trial.FrozenTrial | None = None
) -> list[str]:
    """Store the figures of `DASHBOARD_FIGURES` in the study for optuna-dashboard.

    Figures that the study cannot support yet (no completed trial) are left out, and an older
    stored version of them stays. The figure titles carry the counts of the notes, because the
    dashboard shows a figure without text around it.

    Args:
        study: The study to read and write.
        trial: Ignored; present so that the function can be passed as an Optuna callback.

    Returns:
        The graph object ids saved. Errors are logged, not raised, so that a worker goes on.
    """
    del trial
    try:
        from optuna_dashboard import save_plotly_graph_object

        from regnas.figures import FIGURES_BY_NAME

        view = StudyTrials.from_study(study)
        saved = []
        for name in DASHBOARD_FIGURES:
            item = FIGURES_BY_NAME[name](view)
            if item.skipped:
                continue
            subtitle = {"text": view.counts_text()}
            item.figure.update_layout(title={"text": item.title, "subtitle": subtitle})
            graph_object_id = f"regnas-{name}"
            save_plotly_graph_object(study, item.figure, graph_object_id=graph_object_id)
            saved.append(graph_object_id)
    except Exception:
        _logger.warning(
            "Could not save the dashboard figures of study %r", study.study_name, exc_info=True
        )
        return []
    return saved


def annotate_study(study_name: str, storage: str | None) -> tuple[int, list[str]]:
    """Store notes on every trial of an existing study and its dashboard figures.

    Returns:
        The number of notes saved and the graph object ids of the figures saved.

    Raises:
        ValueError: The storage or the study does not exist.
    """
    from regnas.storage import load_existing_study, open_storage, resolve_storage

    storage_url = resolve_storage(storage)
    study = load_existing_study(study_name, open_storage(storage_url, create=False), storage_url)
    return save_trial_notes(study), save_study_figures(study)


def _save_note(study: optuna.Study, trial: optuna.trial.FrozenTrial, body: str) -> None:
    from optuna_dashboard import save_note

    # optuna_dashboard.save_note takes a live optuna.Trial. Building one on a study with a
    # RandomSampler reads the trial once and leaves the search's sampler untouched.
    # NOTE: `_trial_id` is private to Optuna (5.1), but FrozenTrial exposes no public id.
    handle = optuna.study.Study(
        study.study_name, storage=study._storage, sampler=optuna.samplers.RandomSampler()
    )
    save_note(optuna.trial.Trial(handle, trial._trial_id), body)


def _outcome(trial: optuna.trial.FrozenTrial, source: ErrorSource, labels: Sequence[str]) -> str:
    attrs = trial.user_attrs
    if REJECTED_KEY in attrs:
        return f"rejected before training ({attrs[REJECTED_KEY]})"
    if trial.state == optuna.trial.TrialState.FAIL:
        return f"failed ({attrs.get(FAIL_REASON_KEY, 'no reason stored')})"

    epochs = attrs.get("epochs_trained")
    outcome = trial.state.name.lower()
    if epochs:
        outcome += f" after {count_text(epochs, 'epoch')}"
    error = source.error(trial.values)
    if trial.state == optuna.trial.TrialState.COMPLETE and trial.values:
        values = [
            f"{label} {value:.4f}" for label, value in zip(labels, trial.values, strict=True)
        ]
        if error is not None and not any(label == "error" for label in labels):
            values.append(f"error {error:.4f}")
        return f"{outcome}, {', '.join(values)}"
    last = last_intermediate(trial)
    if last is not None:
        return f"{outcome}, validation accuracy {last[1]:.4f} at epoch {last[0]}"
    return outcome


def _number(value: Any, spec: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return format(value, spec) if isinstance(value, float) else str(value)


def _size(size: int) -> str:
    return f"{size}x{size}"


def _mflops(part: dict[str, int]) -> str:
    return f"{part['flops'] / 1e6:.3f}"
