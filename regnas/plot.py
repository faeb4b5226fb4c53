"""Write a study's figures as HTML: ``python -m regnas.plot --study NAME --output-dir DIR``."""

from __future__ import annotations

import argparse

from regnas.cli import run_main, setup_logging


DEFAULT_STUDY = "regnetx-fashion-mnist"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.plot",
        description="Write self-contained plotly HTML pages of a study's figures and an "
        "index.html that links them.",
    )
    parser.add_argument(
        "--study", default=DEFAULT_STUDY, help=f"study name (default: {DEFAULT_STUDY})"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or SQLite file (default: studies/regnas.db)",
    )
    parser.add_argument(
        "--output-dir", required=True, help="directory for the HTML pages; created if missing"
    )
    parser.add_argument(
        "--png",
        action="store_true",
        help="also write a PNG of each figure (needs kaleido and Chromium)",
    )
    args = parser.parse_args(argv)
    setup_logging()

    from regnas.report import write_report

    report = write_report(args.study, args.storage, args.output_dir, png=args.png)
    for item in report.figures:
        if item.skipped:
            print(f"skipped {item.name}: {item.note}")
    drawn = len(report.pages)
    print(f"Wrote {drawn} figure(s) and the index to {report.index.resolve()}")
    return 0


if __name__ == "__main__":
    run_main(main)
