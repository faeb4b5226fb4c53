"""Evaluate a saved model: ``python -m regnas.evaluate RUN_DIR_OR_MODEL_FILE``."""

from __future__ import annotations

import argparse
import json

from regnas.cli import run_main, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.evaluate",
        description="Load a model saved by 'python -m regnas.train' and print its accuracy on "
        "the Fashion-MNIST test set, as it is and with each image's scores averaged with "
        "those of its mirror image.",
    )
    parser.add_argument(
        "model", help="run directory (its model.msgpack is read) or a model.msgpack file"
    )
    parser.add_argument(
        "--data-dir", default=None, help="directory with the four Fashion-MNIST IDX .gz files"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON object on stdout"
    )
    args = parser.parse_args(argv)
    setup_logging()

    from regnas.trained import accuracy_text, evaluate_test_set

    result = evaluate_test_set(args.model, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{accuracy_text(result)} on {result['test_images']} images ({result['model']})")
    return 0


if __name__ == "__main__":
    run_main(main)
