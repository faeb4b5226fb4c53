"""Add architecture notes and figures to a study for optuna-dashboard.

``python -m regnas.annotate --study NAME`` writes into the storage: a Markdown note with the
stage table on every trial that has an architecture, and the regnas figures on the study.
"""

from __future__ import annotations

import argparse

from regnas.cli import DEFAULT_STUDY, add_study_arguments, count_text, run_main, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.annotate",
        description="Store a stage-table note on every trial of a study and the regnas "
        "figures on the study, for optuna-dashboard. Rerunning replaces them.",
    )
    add_study_arguments(parser, DEFAULT_STUDY)
    args = parser.parse_args(argv)
    setup_logging()

    from regnas.notes import annotate_study

    notes, figures = annotate_study(args.study, args.storage)
    print(
        f"Saved {count_text(notes, 'trial note')} and {count_text(len(figures), 'figure')} "
        f"in study {args.study!r}"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
