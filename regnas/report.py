"""Write a study's figures as self-contained HTML pages, an index page, and optional PNG files.

Each page embeds plotly.js (about 4.7 MB), so it opens offline and can be mailed alone. PNG
export goes through kaleido, which drives a locally installed Chrome or Chromium.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import html
import logging
from pathlib import Path

from regnas.figures import ReportFigure, build_figures, require_plotly
from regnas.storage import load_existing_study, mask_password, open_storage, resolve_storage
from regnas.trials import StudyTrials


_logger = logging.getLogger(__name__)

PNG_WIDTH, PNG_HEIGHT = 1100, 650
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;"
    "color:#222}p.note{color:#444;max-width:70em}li{margin:.4em 0}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;"
    "text-align:right}th{background:#f3f3f3}"
)


@dataclasses.dataclass(frozen=True)
class Report:
    """Files written by `write_report`, and the figures they show.

    Attributes:
        index: Path of ``index.html``.
        figures: Every figure, skipped ones included.
        pages: HTML page of each drawn figure, by figure name.
        images: PNG file of each drawn figure, by figure name; empty without ``png``.
    """

    index: Path
    figures: list[ReportFigure]
    pages: dict[str, Path]
    images: dict[str, Path]


def write_report(
    study_name: str, storage: str | None, output_dir: str | Path, png: bool = False
) -> Report:
    """Read a study and write its figures and ``index.html`` into `output_dir`.

    Args:
        study_name: Name of an existing study.
        storage: Storage URL or SQLite path; None means ``studies/regnas.db``.
        output_dir: Directory to write into; created if missing.
        png: Whether to write a PNG beside each HTML page as well (needs kaleido and Chromium).

    Raises:
        ValueError: The storage or study does not exist, the directory cannot be written, or
            PNG export was requested without kaleido or a browser.
    """
    require_plotly()
    if png:
        _require_kaleido()
    storage_url = resolve_storage(storage)
    study = load_existing_study(study_name, open_storage(storage_url, create=False), storage_url)
    view = StudyTrials.from_study(study)
    figures = build_figures(view)

    directory = Path(output_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        pages = {
            item.name: _write_page(directory, item, view.study_name)
            for item in figures
            if not item.skipped
        }
        images = _write_images(directory, figures) if png else {}
        index = directory / "index.html"
        index.write_text(index_html(view, figures, mask_password(storage_url), images))
    except OSError as error:
        raise ValueError(
            f"Cannot write the report into {directory}: {error.strerror}. Pass another "
            "--output-dir."
        ) from None
    return Report(index=index, figures=figures, pages=pages, images=images)


def html_page(title: str, body: str) -> str:
    """Return a complete HTML document with the report's style around `body`."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def figure_div(item: ReportFigure) -> str:
    """Return the figure as an HTML fragment that embeds plotly.js."""
    return str(
        item.figure.to_html(
            full_html=False, include_plotlyjs=True, div_id=item.name, default_height="620px"
        )
    )


def _write_page(directory: Path, item: ReportFigure, study_name: str) -> Path:
    body = (
        '<p><a href="index.html">All figures</a></p>\n'
        f"<h1>{html.escape(item.title)}</h1>\n"
        f'<p class="note">{html.escape(item.note)}</p>\n{figure_div(item)}'
    )
    path = directory / f"{item.name}.html"
    path.write_text(html_page(f"{item.title} - {study_name}", body))
    return path


def index_html(
    view: StudyTrials,
    figures: Sequence[ReportFigure],
    storage: str,
    images: dict[str, Path] | None = None,
) -> str:
    """Return the index page: the study summary, links to the figures, and the skipped ones."""
    images = images or {}
    best = view.best(1)
    if best:
        best_text = f"trial {best[0].number}, {view.source.label} {view.error(best[0]):.4f}"
    else:
        best_text = "none (no trial has completed)"
    objectives = ", ".join(
        f"{name} ({direction.name.lower()})"
        for name, direction in zip(view.metric_labels, view.directions, strict=True)
    )
    lines = [
        f"<h1>Study {html.escape(view.study_name)}</h1>",
        "<ul>",
        f"<li>Storage: {html.escape(storage)}</li>",
        f"<li>Objectives: {html.escape(objectives)}</li>",
        f"<li>Trials: {html.escape(view.counts_text())}</li>",
        f"<li>Lowest error: {html.escape(best_text)}</li>",
        "</ul>",
        "<h2>Figures</h2>",
        "<ul>",
    ]
    for item in figures:
        if item.skipped:
            continue
        link = f'<a href="{item.name}.html">{html.escape(item.title)}</a>'
        if item.name in images:
            link += f' (<a href="{images[item.name].name}">PNG</a>)'
        lines.append(f"<li>{link}: {html.escape(item.note)}</li>")
    lines.append("</ul>")
    skipped = [item for item in figures if item.skipped]
    if skipped:
        lines.append("<h2>Skipped figures</h2>\n<ul>")
        for item in skipped:
            lines.append(f"<li>{html.escape(item.title)}: {html.escape(item.note)}</li>")
        lines.append("</ul>")
    return html_page(f"Study {view.study_name}", "\n".join(lines))


def _require_kaleido() -> None:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise ValueError(
            "PNG export needs kaleido, which is not installed; run pip install kaleido, "
            "or leave out --png."
        ) from None


def _write_images(directory: Path, figures: Sequence[ReportFigure]) -> dict[str, Path]:
    import plotly.io

    drawn = [item for item in figures if not item.skipped]
    paths = {item.name: directory / f"{item.name}.png" for item in drawn}
    if not drawn:
        return paths
    try:
        # One call for all figures starts the browser once instead of once per figure.
        plotly.io.write_images(
            [item.figure for item in drawn],
            [paths[item.name] for item in drawn],
            width=PNG_WIDTH,
            height=PNG_HEIGHT,
        )
    except RuntimeError as error:
        # kaleido raises RuntimeError subclasses when no browser is found or it fails to start.
        raise ValueError(
            f"PNG export failed: {error}. Install Chromium (apt-get install chromium) or "
            "leave out --png."
        ) from None
    return paths
