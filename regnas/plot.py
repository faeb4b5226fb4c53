"""Write a study's figures as HTML: ``python -m regnas.plot --study NAME --output-dir DIR``."""

from __future__ import annotations

import argparse

from regnas.cli import DEFAULT_STUDY, add_study_arguments, count_text, run_main, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.plot",
        description="Write self-contained plotly HTML pages of a study's figures and an "
        "index.html that links them.",
    )
    add_study_arguments(parser, DEFAULT_STUDY)
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
    print(f"Wrote {count_text(drawn, 'figure')} and the index to {report.index.resolve()}")
    return 0


if __name__ == "__main__":
    run_main(main)
