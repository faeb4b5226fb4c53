"""Compare design spaces: ``python -m regnas.analyze --studies A,B --output FILE.html``."""

from __future__ import annotations

import argparse

from regnas.cli import run_main, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.analyze",
        description="Compare studies as design spaces: error EDFs on one figure, the share of "
        "models below given errors, and the parameter ranges of the best models. Use studies "
        "sampled at random and trained without pruning for a fair comparison.",
    )
    parser.add_argument(
        "--studies", required=True, help="comma-separated study names, such as regnetx,anynetx"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or SQLite file (default: studies/regnas.db)",
    )
    parser.add_argument(
        "--min-mflops", type=float, default=None, help="leave out models below this many MFLOPs"
    )
    parser.add_argument(
        "--max-mflops", type=float, default=None, help="leave out models above this many MFLOPs"
    )
    parser.add_argument(
        "--errors",
        default=None,
        help="comma-separated errors for the share-below table, such as 0.1,0.15 "
        "(default: the quartiles of all compared errors)",
    )
    parser.add_argument("--output", required=True, help="HTML file to write")
    args = parser.parse_args(argv)
    setup_logging()

    from regnas.designspace import (
        compare_studies,
        format_table,
        range_table,
        share_table,
        write_comparison,
    )

    comparison = compare_studies(
        [name.strip() for name in args.studies.split(",")],
        args.storage,
        min_mflops=args.min_mflops,
        max_mflops=args.max_mflops,
        thresholds=_parse_errors(args.errors),
    )
    path = write_comparison(comparison, args.output)
    print(f"Models with {comparison.band_text}:")
    print(format_table(share_table(comparison)))
    print()
    print(format_table(range_table(comparison)))
    print(f"\nWrote {path.resolve()}")
    return 0


def _parse_errors(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--errors takes comma-separated numbers such as 0.1,0.15, got {text!r}."
        ) from None


if __name__ == "__main__":
    run_main(main)
