"""Plotly figures of one search: how it progressed, which errors it found, which networks won.

Every builder takes a `StudyTrials` and returns a `ReportFigure`. A figure that the study cannot
support (no completed trial, no intermediate values, ...) comes back with `figure` None and a
note with the reason, so callers list it as skipped instead of writing an empty chart. Rejected
samples are never drawn, and each note says how many trials a figure leaves out and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import datetime
import math
from typing import Any
import warnings

import optuna

from regnas.trials import StudyTrials, is_rejected, mflops


# How many of the lowest-error models the stage-width figure shows.
BEST_COUNT = 10
# Below this many completed trials, the importance figure warns that its values are rough.
FEW_TRIALS = 10
_TEMPLATE = "plotly_white"
_STATE_COLORS = {
    "COMPLETE": "#1f77b4",
    "PRUNED": "#ff7f0e",
    "FAIL": "#d62728",
    "RUNNING": "#7f7f7f",
    "WAITING": "#bcbd22",
}


@dataclasses.dataclass(frozen=True)
class ReportFigure:
    """One figure of a report, or the reason it was skipped.

    Attributes:
        name: File stem and stable id, such as ``edf``.
        title: Human-readable title.
        figure: The plotly figure, or None when the study cannot support it.
        note: What the figure shows and what it leaves out, or why it was skipped.
    """

    name: str
    title: str
    figure: Any
    note: str

    @property
    def skipped(self) -> bool:
        return self.figure is None


def require_plotly() -> Any:
    """Import plotly.graph_objects, or raise ValueError that names the package to install."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise ValueError(
            "Figures need plotly, which is not installed; run pip install plotly "
            "(or pip install plotly)."
        ) from None
    return go


def build_figures(view: StudyTrials) -> list[ReportFigure]:
    """Build every figure of the report in a fixed order; skipped ones carry their reason."""
    return [builder(view) for builder in FIGURES_BY_NAME.values()]


def optimization_history(view: StudyTrials) -> ReportFigure:
    name, title = "history", "Optimization history"
    complete = view.complete
    if not complete:
        return _skip(name, title, view, "no trial has completed")

    go = require_plotly()
    numbers = [trial.number for trial in complete]
    errors = [view.error(trial) for trial in complete]
    best_so_far = list(_running_min(errors))
    figure = go.Figure(
        [
            go.Scatter(x=numbers, y=errors, mode="markers", name=view.source.label),
            go.Scatter(x=numbers, y=best_so_far, mode="lines", name="best so far"),
        ]
    )
    _layout(figure, title, "trial number", view.source.label)
    note = (
        f"Error of each completed trial in the order the trials started, and the lowest error "
        f"so far. Trials: {view.counts_text()}; only completed trials are drawn."
    )
    if view.multi_objective:
        note += " The study has several objectives; this figure follows the error alone."
    return ReportFigure(name, title, figure, note)


def error_edf(view: StudyTrials) -> ReportFigure:
    name, title = "edf", "Error EDF"
    models = view.models
    if not models:
        return _skip(name, title, view, "no trial has completed")

    go = require_plotly()
    errors = sorted(view.errors(models))
    x, y = edf_steps(errors)
    figure = go.Figure(go.Scatter(x=x, y=y, mode="lines", line_shape="hv", name=view.study_name))
    _layout(figure, title, view.source.label, "fraction of models with lower or equal error")
    figure.update_yaxes(range=[0, 1.02])
    note = (
        f"Empirical distribution function of the errors of {len(models)} distinct completed "
        f"models: the fraction of models at or below each error. Trials: {view.counts_text()}. "
        "Pruned trials are left out because they stopped before the last epoch, so a search "
        "with a pruner or a guided sampler (TPE) over-represents good models; compare design "
        "spaces with studies sampled at random and without pruning."
    )
    if len(models) == 1:
        note += " With one model the EDF is a single step."
    return ReportFigure(name, title, figure, note)


def edf_steps(errors: Sequence[float]) -> tuple[list[float], list[float]]:
    """Return the points of the EDF step line of sorted `errors`, rising from 0 to 1."""
    count = len(errors)
    x = [errors[0], *errors]
    y = [0.0, *((index + 1) / count for index in range(count))]
    return x, y


def param_importances(view: StudyTrials) -> ReportFigure:
    name, title = "importances", "Parameter importances"
    complete = view.complete
    if len(complete) < 2:
        return _skip(name, title, view, "parameter importances need at least 2 completed trials")
    varied, constant = _split_params(complete)
    if not varied:
        reason = "no parameter took more than one value among the completed trials"
        return _skip(name, title, view, reason)

    # Importances are computed on a study copy of the completed trials, so that rejected samples
    # (stored as PRUNED) and failed trials stay out and the error is the target in every study.
    study = optuna.create_study(directions=view.directions)
    study.add_trials(complete)
    with warnings.catch_warnings():
        # PED-ANOVA warns that it explains low target values, which is what the error needs, and
        # that few trials give equal importances, which the figure shows anyway.
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
        warnings.filterwarnings("ignore", message="Target and region quantiles select the same")
        importances = optuna.importance.get_param_importances(
            study, params=varied, target=lambda trial: view.errors([trial])[0]
        )

    go = require_plotly()
    names = list(reversed(importances))
    figure = go.Figure(
        go.Bar(x=[importances[key] for key in names], y=names, orientation="h", name="importance")
    )
    _layout(figure, title, f"importance for {view.source.label}", "parameter")
    note = (
        f"How much each sampled parameter decides whether the {len(complete)} completed "
        "trials reach a low error (Optuna's default evaluator, PED-ANOVA, which compares the "
        "best trials with all of them; normalized to sum to 1)."
    )
    if len(complete) < FEW_TRIALS:
        note += f" With only {len(complete)} completed trials, read the values as rough."
    note += _constant_note(constant)
    return ReportFigure(name, title, figure, note)


def parallel_coordinates(view: StudyTrials) -> ReportFigure:
    name, title = "parallel", "Parallel coordinates of the design parameters"
    complete = view.complete
    if not complete:
        return _skip(name, title, view, "no trial has completed")
    shared = [key for key in _param_names(complete) if all(key in t.params for t in complete)]
    if not shared:
        return _skip(name, title, view, "the completed trials share no sampled parameter")

    go = require_plotly()
    errors = [view.error(trial) for trial in complete]
    dimensions = [_dimension(key, complete) for key in shared]
    mflops_values = [mflops(trial) for trial in complete]
    if all(value is not None for value in mflops_values):
        dimensions.append({"label": "MFLOPs", "values": mflops_values})
    dimensions.append({"label": view.source.label, "values": errors})
    line = {"color": errors, "colorscale": "Viridis_r", "showscale": True}
    figure = go.Figure(go.Parcoords(dimensions=dimensions, line=line))
    figure.update_layout(title=title, template=_TEMPLATE, margin={"l": 80, "r": 80})

    _varied, constant = _split_params(complete)
    note = (
        f"One line per completed trial ({len(complete)}), coloured by error (yellow is low). "
        "Drag along an axis to select a range."
    )
    partial = sorted(set(_param_names(complete)) - set(shared))
    if partial:
        note += f" Left out because not every trial has them: {', '.join(partial)}."
    note += _constant_note(constant)
    return ReportFigure(name, title, figure, note)


def error_vs_mflops(view: StudyTrials) -> ReportFigure:
    name, title = "pareto", "Error versus MFLOPs"
    points = [(mflops(t), view.error(t), t.number) for t in view.complete if mflops(t) is not None]
    if not points:
        return _skip(name, title, view, "no completed trial has an MFLOPs count")

    go = require_plotly()
    front = pareto_front(points)  # type: ignore[arg-type]
    figure = go.Figure(
        [
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                text=[f"trial {p[2]}" for p in points],
                mode="markers",
                name="completed trials",
                marker={"color": "#9ecae1"},
            ),
            go.Scatter(
                x=[p[0] for p in front],
                y=[p[1] for p in front],
                text=[f"trial {p[2]}" for p in front],
                mode="lines+markers",
                line_shape="hv",
                name="Pareto front",
                marker={"color": "#d62728", "size": 9},
            ),
        ]
    )
    _layout(figure, title, "MFLOPs", view.source.label)
    note = (
        f"Each completed trial ({len(points)}) by complexity and error. The Pareto front joins "
        f"the {len(front)} trials that no other trial beats on both. Trials: {view.counts_text()}."
    )
    return ReportFigure(name, title, figure, note)


def pareto_front(
    points: Sequence[tuple[float, float, int]],
) -> list[tuple[float, float, int]]:
    """Return the points that no other point beats on both cost and error, by rising cost."""
    front: list[tuple[float, float, int]] = []
    for point in sorted(points):
        if not front or point[1] < front[-1][1]:
            front.append(point)
    return front


def learning_curves(view: StudyTrials) -> ReportFigure:
    name, title = "curves", "Learning curves"
    trained = [trial for trial in view.trained if trial.intermediate_values]
    if not trained:
        reason = "no trial reported a validation accuracy per epoch (intermediate values)"
        return _skip(name, title, view, reason)

    go = require_plotly()
    traces = []
    for state, label in (("PRUNED", "pruned"), ("COMPLETE", "completed")):
        group = [trial for trial in trained if trial.state.name == state]
        if group:
            traces.append(_curve_trace(go, group, label, _STATE_COLORS[state]))
    figure = go.Figure(traces)
    best = view.best(1)
    if best and best[0].intermediate_values:
        label = f"lowest error (trial {best[0].number})"
        figure.add_trace(_curve_trace(go, best, label, "#d62728"))
    _layout(figure, title, "epoch", "validation error (1 - intermediate value)")
    figure.update_xaxes(dtick=1)
    note = (
        f"Validation error after each epoch of {len(trained)} trained trials; pruned trials end "
        f"where Hyperband stopped them. Trials: {view.counts_text()}."
    )
    return ReportFigure(name, title, figure, note)


def _curve_trace(go: Any, trials: list[optuna.trial.FrozenTrial], label: str, color: str) -> Any:
    # One trace per group, with None between trials, keeps the figure small for large studies.
    x: list[int | None] = []
    y: list[float | None] = []
    text: list[str | None] = []
    for trial in trials:
        for step in sorted(trial.intermediate_values):
            x.append(step)
            y.append(1.0 - trial.intermediate_values[step])
            text.append(f"trial {trial.number}")
        x.append(None)
        y.append(None)
        text.append(None)
    return go.Scatter(
        x=x, y=y, text=text, mode="lines+markers", name=label, line={"color": color, "width": 1}
    )


def timeline(view: StudyTrials) -> ReportFigure:
    name, title = "timeline", "Trial timeline"
    shown = [t for t in view.trials if t.datetime_start is not None and not is_rejected(t)]
    if not shown:
        return _skip(name, title, view, "no trained or failed trial has a start time")

    go = require_plotly()
    now = datetime.datetime.now()
    traces = []
    for state, color in _STATE_COLORS.items():
        group = [trial for trial in shown if trial.state.name == state]
        if not group:
            continue
        ends = [trial.datetime_complete or now for trial in group]
        traces.append(
            go.Bar(
                base=[trial.datetime_start.isoformat() for trial in group],  # type: ignore[union-attr]
                x=[
                    (end - trial.datetime_start).total_seconds() * 1000  # type: ignore[operator]
                    for trial, end in zip(group, ends, strict=True)
                ],
                y=[trial.number for trial in group],
                orientation="h",
                name=state.lower(),
                marker={"color": color},
            )
        )
    figure = go.Figure(traces)
    _layout(figure, title, "time", "trial number")
    figure.update_xaxes(type="date")
    note = (
        f"When each trial ran. Rejected samples ({len(view.rejected)}) are left out: they end "
        "within a second, before anything is built. Unfinished trials extend to now."
    )
    return ReportFigure(name, title, figure, note)


def best_stage_widths(view: StudyTrials) -> ReportFigure:
    name, title = "widths", f"Stage widths and depths of the {BEST_COUNT} lowest-error models"
    best = [trial for trial in view.best(BEST_COUNT) if trial.user_attrs.get("stage_widths")]
    if not best:
        return _skip(name, title, view, "no completed trial stored its stage widths")

    go = require_plotly()
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("width", "depth"))
    colors = _qualitative_colors()
    for rank, trial in enumerate(best):
        widths = trial.user_attrs["stage_widths"]
        depths = trial.user_attrs.get("stage_depths")
        stages = list(range(1, len(widths) + 1))
        label = f"trial {trial.number}: error {view.error(trial):.4f}"
        style = {"color": colors[rank % len(colors)]}
        figure.add_trace(
            go.Scatter(x=stages, y=widths, name=label, legendgroup=label, line=style), 1, 1
        )
        if depths:
            figure.add_trace(
                go.Scatter(
                    x=stages, y=depths, name=label, legendgroup=label, line=style, showlegend=False
                ),
                1,
                2,
            )
    figure.update_layout(title=title, template=_TEMPLATE)
    figure.update_xaxes(title="stage", dtick=1)
    # Widths grow geometrically, so a log axis with ticks at powers of two reads best.
    figure.update_yaxes(type="log", tickvals=[2**k for k in range(3, 13)], row=1, col=1)
    figure.update_yaxes(title="channels", row=1, col=1)
    figure.update_yaxes(title="blocks", rangemode="tozero", row=1, col=2)
    note = (
        f"Output width and number of blocks of each stage for the {len(best)} completed models "
        "with the lowest error. Models with the same stages draw over each other."
    )
    return ReportFigure(name, title, figure, note)


# The builders in report order, by the name of the figure that they return.
FIGURES_BY_NAME: dict[str, Callable[[StudyTrials], ReportFigure]] = {
    "history": optimization_history,
    "edf": error_edf,
    "importances": param_importances,
    "parallel": parallel_coordinates,
    "pareto": error_vs_mflops,
    "curves": learning_curves,
    "timeline": timeline,
    "widths": best_stage_widths,
}


def _skip(name: str, title: str, view: StudyTrials, reason: str) -> ReportFigure:
    return ReportFigure(name, title, None, f"Skipped: {reason}. Trials: {view.counts_text()}.")


def _layout(figure: Any, title: str, x_title: str, y_title: str) -> None:
    figure.update_layout(title=title, template=_TEMPLATE, xaxis_title=x_title, yaxis_title=y_title)


def _qualitative_colors() -> list[str]:
    import plotly.colors

    return list(plotly.colors.qualitative.Plotly)


def _running_min(values: Sequence[float | None]) -> list[float]:
    best = math.inf
    result = []
    for value in values:
        if value is not None:
            best = min(best, value)
        result.append(best)
    return result


def _param_names(trials: Sequence[optuna.trial.FrozenTrial]) -> list[str]:
    names: dict[str, None] = {}
    for trial in trials:
        names.update(dict.fromkeys(trial.params))
    return list(names)


def _split_params(
    trials: Sequence[optuna.trial.FrozenTrial],
) -> tuple[list[str], dict[str, Any]]:
    """Split parameter names into those that varied and those with one value (name: value)."""
    varied, constant = [], {}
    for key in _param_names(trials):
        values = {repr(trial.params[key]) for trial in trials if key in trial.params}
        if len(values) > 1:
            varied.append(key)
        else:
            constant[key] = next(trial.params[key] for trial in trials if key in trial.params)
    return varied, constant


def _constant_note(constant: dict[str, Any]) -> str:
    if not constant:
        return ""
    listed = ", ".join(f"{key} (always {value!r})" for key, value in constant.items())
    return f" Never varied, so they explain nothing: {listed}."


def _dimension(key: str, trials: Sequence[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    distribution = trials[0].distributions[key]
    values = [trial.params[key] for trial in trials]
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        # Categories become their index, and the axis labels them with the category. Values
        # outside the first trial's choices (a space changed between runs) get their own index.
        choices = list(dict.fromkeys([*distribution.choices, *values]))
        indices = [choices.index(value) for value in values]
        return {
            "label": key,
            "values": indices,
            "tickvals": list(range(len(choices))),
            "ticktext": [str(choice) for choice in choices],
            "range": [0, max(len(choices) - 1, 1)],
        }
    low, high = min(values), max(values)
    if low == high:
        # A constant axis gets some height, so plotly draws the line through its middle.
        low, high = low - 1, high + 1
    return {"label": key, "values": values, "range": [low, high]}
