"""Add architecture notes and figures to a study for optuna-dashboard.

``python -m regnas.annotate --study NAME`` writes into the storage: a Markdown note with the
stage table on every trial that has an architecture, and the regnas figures on the study.
"""

from __future__ import annotations

import argparse

from regnas.cli import run_main, setup_logging
from regnas.plot import DEFAULT_STUDY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.annotate",
        description="Store a stage-table note on every trial of a study and the regnas "
        "figures on the study, for optuna-dashboard. Rerunning replaces them.",
    )
    parser.add_argument(
        "--study", default=DEFAULT_STUDY, help=f"study name (default: {DEFAULT_STUDY})"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or SQLite file (default: studies/regnas.db)",
    )
    args = parser.parse_args(argv)
    setup_logging()

    from regnas.notes import annotate_study

    notes, figures = annotate_study(args.study, args.storage)
    print(f"Saved {notes} trial note(s) and {len(figures)} figure(s) in study {args.study!r}")
    return 0


if __name__ == "__main__":
    run_main(main)
