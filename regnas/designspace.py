"""Compare design spaces by the error distribution of the models sampled from them.

Radosavovic et al. (2020) compare design spaces through the empirical distribution function (EDF)
of the errors of models sampled from each, optionally restricted to one complexity band, and read
off where good models lie in each parameter. This module does that for several studies: the EDFs on
one figure, the share of models below given errors, and per parameter the range of the best models.

Honest EDFs need studies sampled at random and trained without pruning; with TPE or Hyperband the
completed trials over-represent good models. The HTML output states this next to the figure.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from regnas.cli import count_text
from regnas.figures import edf_steps, require_plotly
from regnas.report import html_page
from regnas.storage import load_existing_study, open_storage, resolve_storage
from regnas.trials import StudyTrials, mflops


# Share of the lowest-error models whose parameter ranges count as "good".
GOOD_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class ParamRange:
    """Range of one parameter among the best models and among all models of a study.

    Attributes:
        name: Optuna parameter name.
        good: The good models' values: ``low - high`` for numbers, the set for categories.
        sampled: The same over all models of the study in the band.
        good_count: Number of good models that have the parameter.
    """

    name: str
    good: str
    sampled: str
    good_count: int


@dataclasses.dataclass(frozen=True)
class SpaceSummary:
    """The models of one study inside the complexity band, and what they show.

    Attributes:
        study: Study name.
        errors: Sorted errors of the distinct completed models in the band.
        outside_band: Completed models left out because of their MFLOPs (or a missing count).
        counts: The study's trial counts, as `StudyTrials.counts_text` writes them.
        sampler: The sampler named in the study settings, or None when the settings lack it.
        ranges: Parameter ranges of the good models, by parameter name.
    """

    study: str
    errors: list[float]
    outside_band: int
    counts: str
    sampler: str | None
    ranges: dict[str, ParamRange]

    def share_below(self, error: float) -> float | None:
        """Return the fraction of models with an error below `error`, or None without models."""
        if not self.errors:
            return None
        return sum(value < error for value in self.errors) / len(self.errors)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Summaries of several studies under one complexity band and one set of error thresholds."""

    spaces: list[SpaceSummary]
    min_mflops: float | None
    max_mflops: float | None
    thresholds: list[float]

    @property
    def band_text(self) -> str:
        if self.min_mflops is None and self.max_mflops is None:
            return "all complexities"
        low = "0" if self.min_mflops is None else f"{self.min_mflops:g}"
        high = "inf" if self.max_mflops is None else f"{self.max_mflops:g}"
        return f"{low} to {high} MFLOPs"


def compare_studies(
    study_names: Sequence[str],
    storage: str | None,
    min_mflops: float | None = None,
    max_mflops: float | None = None,
    thresholds: Sequence[float] | None = None,
) -> Comparison:
    """Summarize each study's models inside the complexity band.

    Args:
        study_names: Names of existing studies in `storage`, at least one, without repeats.
        storage: Storage URL or SQLite path; None means ``studies/regnas.db``.
        min_mflops: Lowest MFLOPs of a model that counts, inclusive; None for no limit.
        max_mflops: Highest MFLOPs of a model that counts, inclusive; None for no limit.
        thresholds: Errors at which to report the share of models below; None takes the
            quartiles of all compared errors, rounded to 3 decimals.

    Raises:
        ValueError: A study or the storage does not exist, or an argument is invalid.
    """
    _check_arguments(study_names, min_mflops, max_mflops, thresholds)
    storage_url = resolve_storage(storage)
    opened = open_storage(storage_url, create=False)
    spaces = []
    for name in study_names:
        study = load_existing_study(name, opened, storage_url)
        spaces.append(summarize(StudyTrials.from_study(study), min_mflops, max_mflops))
    if thresholds is None:
        thresholds = default_thresholds([error for space in spaces for error in space.errors])
    return Comparison(spaces, min_mflops, max_mflops, sorted(thresholds))


def summarize(
    view: StudyTrials, min_mflops: float | None, max_mflops: float | None
) -> SpaceSummary:
    """Collect the errors and good parameter ranges of one study's models in the band."""
    inside = [trial for trial in view.models if _in_band(trial, min_mflops, max_mflops)]
    ranked = sorted(inside, key=lambda trial: (view.errors([trial])[0], trial.number))
    good = ranked[: math.ceil(len(ranked) * GOOD_FRACTION)]
    names = sorted({key for trial in inside for key in trial.params})
    sampler = view.settings.get("sampler")
    return SpaceSummary(
        study=view.study_name,
        errors=sorted(view.errors(inside)),
        outside_band=len(view.models) - len(inside),
        counts=view.counts_text(),
        sampler=str(sampler) if sampler is not None else None,
        ranges={name: _param_range(name, good, inside) for name in names},
    )


def default_thresholds(errors: Sequence[float]) -> list[float]:
    """Return the rounded quartiles of `errors`, without repeats; empty for no errors."""
    if not errors:
        return []
    quartiles = np.quantile(np.asarray(errors), [0.25, 0.5, 0.75])
    return sorted({round(float(value), 3) for value in quartiles})


def share_table(comparison: Comparison) -> list[list[str]]:
    """Return the share-below-error table as rows of text, the header row first."""
    header = ["study", "models", *(f"error < {value:g}" for value in comparison.thresholds)]
    rows = [header]
    for space in comparison.spaces:
        cells = [space.study, str(len(space.errors))]
        for value in comparison.thresholds:
            share = space.share_below(value)
            cells.append("-" if share is None else f"{share:.1%}")
        rows.append(cells)
    return rows


def range_table(comparison: Comparison) -> list[list[str]]:
    """Return the good-range table as rows of text, the header row first."""
    percent = f"{GOOD_FRACTION:.0%}"
    rows = [["parameter", "study", f"best {percent} of models", "all models", "good models"]]
    names = sorted({name for space in comparison.spaces for name in space.ranges})
    for name in names:
        for space in comparison.spaces:
            if name in space.ranges:
                found = space.ranges[name]
                rows.append([name, space.study, found.good, found.sampled, str(found.good_count)])
    return rows


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Return `rows` as aligned plain text, for the terminal."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def edf_figure(comparison: Comparison) -> Any:
    """Return one figure with the error EDF of every study that has models in the band."""
    go = require_plotly()
    figure = go.Figure()
    for space in comparison.spaces:
        if not space.errors:
            continue
        x, y = edf_steps(space.errors)
        label = f"{space.study} (n={len(space.errors)})"
        figure.add_trace(go.Scatter(x=x, y=y, mode="lines", line_shape="hv", name=label))
    figure.update_layout(
        title=f"Error EDF, {comparison.band_text}",
        template="plotly_white",
        xaxis_title="error",
        yaxis_title="fraction of models with lower or equal error",
        yaxis_range=[0, 1.02],
    )
    return figure


def write_comparison(comparison: Comparison, output: str | Path) -> Path:
    """Write the comparison as one self-contained HTML page and return its path.

    Raises:
        ValueError: The file cannot be written.
    """
    parts = [f"<h1>Design spaces compared: {html.escape(comparison.band_text)}</h1>"]
    parts.append(f'<p class="note">{html.escape(_explanation(comparison))}</p>')
    if any(space.errors for space in comparison.spaces):
        parts.append(edf_figure(comparison).to_html(full_html=False, include_plotlyjs=True))
    else:
        parts.append("<p><strong>No EDF: no study has a completed model in the band.</strong></p>")
    parts.append("<h2>Share of models below each error</h2>")
    parts.append(_html_table(share_table(comparison)))
    parts.append(f"<h2>Where the best {GOOD_FRACTION:.0%} of models lie</h2>")
    parts.append(_html_table(range_table(comparison)))
    parts.append("<h2>Trials of each study</h2>\n<ul>")
    for space in comparison.spaces:
        sampler = space.sampler or "not recorded"
        parts.append(
            f"<li>{html.escape(space.study)}: {html.escape(space.counts)}; "
            f"{count_text(space.outside_band, 'completed model')} outside the band; sampler: "
            f"{html.escape(sampler)}</li>"
        )
    parts.append("</ul>")

    path = Path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html_page("Design spaces compared", "\n".join(parts)))
    except OSError as error:
        raise ValueError(
            f"Cannot write {path}: {error.strerror}. Pass --output FILE.html in a writable "
            "directory."
        ) from None
    return path


def _explanation(comparison: Comparison) -> str:
    return (
        "Each curve is the empirical distribution function of the errors of the distinct "
        f"completed models of one study ({comparison.band_text}): the fraction of models at "
        "or below each error. A curve further up and to the left means a design space with more "
        "good models. Pruned, rejected and failed trials are left out, and so are trials that "
        "repeated an earlier architecture. The comparison is fair only for studies sampled at "
        "random and trained without pruning, because a guided sampler or a pruner makes the "
        f"completed models better than the space. Good models are the best {GOOD_FRACTION:.0%} "
        "of each study's models in the band (at least one)."
    )


def _in_band(
    trial: optuna.trial.FrozenTrial, min_mflops: float | None, max_mflops: float | None
) -> bool:
    if min_mflops is None and max_mflops is None:
        return True
    value = mflops(trial)
    if value is None:
        return False
    return (min_mflops is None or value >= min_mflops) and (
        max_mflops is None or value <= max_mflops
    )


def _param_range(
    name: str,
    good: Sequence[optuna.trial.FrozenTrial],
    inside: Sequence[optuna.trial.FrozenTrial],
) -> ParamRange:
    good_values = [trial.params[name] for trial in good if name in trial.params]
    all_values = [trial.params[name] for trial in inside if name in trial.params]
    return ParamRange(name, _describe(good_values), _describe(all_values), len(good_values))


def _describe(values: Sequence[Any]) -> str:
    if not values:
        return "-"
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and len(set(values)) > 3:
        return f"{_short(min(values))} - {_short(max(values))}"
    # Numbers sort by value; other categories (strings, None) follow, sorted by their text.
    ordered = sorted(set(values), key=lambda v: (0, v, "") if numeric else (1, 0, repr(v)))
    counts = {value: values.count(value) for value in ordered}
    return ", ".join(f"{_short(value)} (x{count})" for value, count in counts.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _check_arguments(
    study_names: Sequence[str],
    min_mflops: float | None,
    max_mflops: float | None,
    thresholds: Sequence[float] | None,
) -> None:
    if not study_names or any(not name.strip() for name in study_names):
        raise ValueError(
            f"--studies needs one or more study names separated by commas, got {study_names!r}."
        )
    repeated = sorted({name for name in study_names if list(study_names).count(name) > 1})
    if repeated:
        raise ValueError(f"--studies names {', '.join(repeated)} more than once; list each once.")
    for flag, value in (("--min-mflops", min_mflops), ("--max-mflops", max_mflops)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{flag} must be a number >= 0, got {value!r}.")
    if min_mflops is not None and max_mflops is not None and min_mflops > max_mflops:
        raise ValueError(
            f"--min-mflops {min_mflops:g} exceeds --max-mflops {max_mflops:g}; swap them."
        )
    for value in thresholds or []:
        if not (math.isfinite(value) and 0 < value <= 1):
            raise ValueError(f"--errors takes errors in (0, 1], such as 0.1,0.15; got {value!r}.")


def _html_table(rows: Sequence[Sequence[str]]) -> str:
    header = "".join(f"<th>{html.escape(cell)}</th>" for cell in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows[1:]
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"
