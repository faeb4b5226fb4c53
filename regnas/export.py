"""Export a study's best architecture to JSON: ``python -m regnas.export --study NAME``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from regnas.cli import DEFAULT_STUDY, add_study_arguments, run_main, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.export",
        description="Write the best architecture of a study as JSON, to rebuild and retrain it "
        "with 'python -m regnas.train --config FILE'.",
    )
    add_study_arguments(parser, DEFAULT_STUDY)
    parser.add_argument(
        "--output",
        default=None,
        help="JSON file to write (default: studies/STUDY.best.json, or STUDY.pareto.json)",
    )
    parser.add_argument(
        "--pareto",
        action="store_true",
        help="print the trials on the error-MFLOPs Pareto front and write them all, as a list",
    )
    args = parser.parse_args(argv)
    setup_logging()

    from regnas.archive import save_architecture
    from regnas.results import export_best, export_pareto

    if args.pareto:
        documents = export_pareto(args.study, args.storage)
        output = _output(args.output, args.study, "pareto")
        _write(output, lambda: save_architecture(output, documents))
        print(f"{len(documents)} trial(s) on the error-MFLOPs Pareto front of {args.study!r}:")
        print("trial  val_accuracy  error   MFLOPs")
        for document in documents:
            accuracy, mflops = document["metrics"]["val_accuracy"], document["metrics"]["mflops"]
            trial = document["provenance"]["trial"]
            print(f"{trial:>5}  {accuracy:>12.4f}  {1 - accuracy:.4f}  {mflops:>6.2f}")
        print(f"Wrote them to {output.resolve()}")
        return 0

    document = export_best(args.study, args.storage)
    output = _output(args.output, args.study, "best")
    path = _write(output, lambda: save_architecture(output, document))
    print(
        f"Wrote trial {document['provenance']['trial']} (val_accuracy "
        f"{document['metrics']['val_accuracy']:.4f}, {document['metrics']['mflops']} MFLOPs) "
        f"to {path.resolve()}"
    )
    return 0


def _output(output: str | None, study: str, kind: str) -> Path:
    return Path(output) if output else Path("studies") / f"{study}.{kind}.json"


def _write(output: Path, write: Callable[[], Path | None]) -> Path:
    try:
        write()
    except OSError as error:
        raise ValueError(
            f"Cannot write {output}: {error.strerror}. Pass --output FILE in a writable directory."
        ) from None
    return output


if __name__ == "__main__":
    run_main(main)
