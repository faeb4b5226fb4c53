"""Make the README's images from a finished study.

Usage: python scripts/docs_images.py --storage STUDY.db [--study NAME] [--output-dir docs/images]

Writes two PNG files:
  - report-pareto.png: the report's error-versus-MFLOPs figure, exported through kaleido;
  - dashboard-trial.png: optuna-dashboard's page of the best trial with its stage-table note,
    taken with headless Chromium. The notes go into a temporary copy of a SQLite storage, so
    the storage itself is only read.
Needs plotly, kaleido, optuna-dashboard and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import shutil
import tempfile

import optuna

from regnas.browser import running_dashboard, screenshot
from regnas.notes import annotate_study
from regnas.report import write_report
from regnas.storage import resolve_storage, sqlite_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", required=True, help="SQLite file of the study")
    parser.add_argument("--study", default="regnetx-fashion-mnist", help="study name")
    parser.add_argument("--output-dir", default="docs/images", help="directory for the PNGs")
    args = parser.parse_args()

    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    source = sqlite_path(resolve_storage(args.storage))
    if source is None or not source.is_file():
        parser.error(f"--storage must be an existing SQLite file, got {args.storage!r}")

    with tempfile.TemporaryDirectory(prefix="regnas-docs-") as scratch:
        report = write_report(args.study, str(source), Path(scratch) / "report", png=True)
        shutil.copyfile(report.images["pareto"], output / "report-pareto.png")

        copy = Path(scratch) / "annotated.db"
        shutil.copyfile(source, copy)
        annotate_study(args.study, str(copy))
        url = f"sqlite:///{copy}"
        study = optuna.load_study(study_name=args.study, storage=url)
        study_id = study._study_id
        best = study.best_trials[0].number
        with running_dashboard(url) as base:
            page = f"{base}/dashboard/studies/{study_id}/trials?numbers={best}"
            screenshot(page, output / "dashboard-trial.png", 1280, 820)

    for name in ("report-pareto.png", "dashboard-trial.png"):
        print(f"Wrote {(output / name).resolve()}")


if __name__ == "__main__":
    main()
