"""Export a study's best architecture to JSON: ``python -m regnas.export --study NAME``."""

from __future__ import annotations

import argparse
from pathlib import Path

from regnas.cli import add_study_arguments, run_main, setup_logging


def main(argv: list[str] | None = None) -> int:
    from regnas.study import DEFAULT_STUDY

    parser = argparse.ArgumentParser(
        prog="python -m regnas.export",
        description="Write the best architecture of a study as JSON, to rebuild and retrain it "
        "with 'python -m regnas.train --config FILE'.",
    )
    add_study_arguments(parser, DEFAULT_STUDY)
    parser.add_argument(
        "--output", default=None, help="JSON file to write (default: studies/STUDY.best.json)"
    )
    args = parser.parse_args(argv)
    setup_logging()

    from regnas.archive import save_architecture
    from regnas.results import export_best

    document = export_best(args.study, args.storage)
    output = Path(args.output) if args.output else Path("studies") / f"{args.study}.best.json"
    try:
        path = save_architecture(output, document)
    except OSError as error:
        raise ValueError(
            f"Cannot write {output}: {error.strerror}. Pass --output FILE in a writable directory."
        ) from None
    print(
        f"Wrote trial {document['provenance']['trial']} (val_accuracy "
        f"{document['metrics']['val_accuracy']:.4f}, {document['metrics']['mflops']} MFLOPs) "
        f"to {path.resolve()}"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
