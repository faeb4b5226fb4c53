"""Export a study's architectures: ``python -m regnas.export --study NAME``.

Writes the best trial, the error-MFLOPs Pareto front (``--pareto``) or the K most accurate trials
(``--top-k K``), as regnas JSON, pycls YAML or a Markdown table (``--format``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from regnas.cli import DEFAULT_STUDY, add_study_arguments, count_text, run_main, setup_logging


EXTENSIONS = {"json": ".json", "pycls": ".yaml", "markdown": ".md"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.export",
        description="Write the best architecture of a study (or its Pareto front, or its K best "
        "trials) as JSON, to rebuild and retrain it with 'python -m regnas.train --config FILE', "
        "or as a pycls configuration or a Markdown table.",
    )
    add_study_arguments(parser, DEFAULT_STUDY)
    parser.add_argument(
        "--output",
        default=None,
        help="file to write (default: studies/STUDY.best.json, STUDY.pareto.json or "
        "STUDY.topK.json, with .yaml or .md for the other formats). A list in pycls format is "
        "written as one file per trial, named OUTPUT_STEM.trialN.yaml",
    )
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument(
        "--pareto",
        action="store_true",
        help="print the trials on the error-MFLOPs Pareto front and write them all, as a list",
    )
    selection.add_argument(
        "--top-k",
        type=_positive_int,
        default=None,
        metavar="K",
        help="print the K trained trials with the best validation accuracy and write them, "
        "best first, as a list",
    )
    parser.add_argument(
        "--format",
        choices=sorted(EXTENSIONS),
        default="json",
        help="json: regnas architecture file (default); pycls: pycls YAML model configuration; "
        "markdown: a table of the stages",
    )
    args = parser.parse_args(argv)
    setup_logging()

    from regnas.results import export_best
    from regnas.storage import resolve_storage

    storage_url = resolve_storage(args.storage)
    if not args.pareto and args.top_k is None:
        document = export_best(args.study, args.storage)
        output = _output(args.output, args.study, "best", args.format)
        title = f"Best trial of study {args.study!r}"
        paths = write_export(document, args.format, output, storage_url, title)
        print(
            f"Wrote trial {document['provenance']['trial']} (val_accuracy "
            f"{document['metrics']['val_accuracy']:.4f}, {document['metrics']['mflops']} MFLOPs) "
            f"to {paths[0].resolve()}"
        )
        return 0

    documents, kind, title = _select_list(args.study, args.storage, args.top_k)
    _print_table(documents)
    output = _output(args.output, args.study, kind, args.format)
    paths = write_export(documents, args.format, output, storage_url, title)
    pronoun = "it" if len(documents) == 1 else "them"
    print(f"Wrote {pronoun} to " + ", ".join(str(path.resolve()) for path in paths))
    return 0


def _select_list(
    study: str, storage: str | None, top_k: int | None
) -> tuple[list[dict[str, Any]], str, str]:
    """Export the Pareto front (`top_k` None) or the `top_k` best trials, and print the heading.

    Returns:
        The documents, the kind that names the default output file, and a Markdown title.
    """
    from regnas.results import export_pareto, export_top_k

    if top_k is None:
        documents = export_pareto(study, storage)
        print(
            f"{count_text(len(documents), 'trial')} on the error-MFLOPs Pareto front of {study!r}:"
        )
        return documents, "pareto", f"Error-MFLOPs Pareto front of study {study!r}"

    documents = export_top_k(study, storage, top_k)
    if len(documents) < top_k:
        print(
            f"Note: study {study!r} has only {count_text(len(documents), 'completed trial')} "
            f"to export, fewer than --top-k {top_k}; writing "
            f"{'it' if len(documents) == 1 else 'them all'}."
        )
    print(f"The {count_text(len(documents), 'trial')} of {study!r} with the best val_accuracy:")
    title = f"{count_text(len(documents), 'best trial')} of study {study!r}"
    if len(documents) == 1:
        title = f"Best trial of study {study!r}"
    return documents, f"top{top_k}", title


def write_export(
    documents: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    export_format: str,
    output: Path,
    storage_url: str,
    title: str,
) -> list[Path]:
    """Write one architecture document, or a list of them, in `export_format`.

    JSON and Markdown go to `output`. pycls reads one model per file, so a list in pycls format
    is written as one file per trial, ``OUTPUT_STEM.trialN.yaml``. Everything is converted
    before the first file is written, so a conversion error writes nothing.

    Raises:
        ValueError: A path is the study's SQLite file, a file cannot be written, or pycls
            cannot express an architecture.
    """
    from regnas.archive import save_architecture
    from regnas.markdown import to_markdown
    from regnas.pycls import to_pycls_yaml

    is_list = not isinstance(documents, Mapping)
    entries: list[Mapping[str, Any]] = (
        [documents] if isinstance(documents, Mapping) else list(documents)
    )
    # None stands for the JSON file, which save_architecture writes.
    texts: dict[Path, str | None]
    if export_format == "json":
        texts = {output: None}
    elif export_format == "markdown":
        texts = {output: to_markdown(entries, title)}
    elif not is_list:
        texts = {output: to_pycls_yaml(entries[0])}
    else:
        texts = {
            output.with_name(
                f"{output.stem}.trial{entry['provenance']['trial']}{output.suffix}"
            ): to_pycls_yaml(entry)
            for entry in entries
        }

    for path in texts:
        _reject_storage_output(path, storage_url)
    for path, text in texts.items():
        try:
            if not path.parent.exists():
                path.parent.mkdir(parents=True)
                print(f"Created the directory {path.parent.resolve()}")
            if text is None:
                save_architecture(path, documents)
            else:
                path.write_text(text, encoding="utf-8")
        except OSError as error:
            raise ValueError(
                f"Cannot write {path}: {error.strerror}. Pass --output FILE in a writable "
                "directory."
            ) from None
    return list(texts)


def _reject_storage_output(path: Path, storage_url: str) -> None:
    # Writing over the SQLite file would destroy the study that the export reads from.
    for scheme in ("sqlite:///", "journal://"):
        if storage_url.startswith(scheme):
            database = Path(storage_url.removeprefix(scheme))
            if path.resolve() == database.resolve():
                raise ValueError(
                    f"--output {path} is the study's storage file; writing it would destroy "
                    "the study. Pass another --output FILE."
                )


def _print_table(documents: Sequence[Mapping[str, Any]]) -> None:
    print("trial  val_accuracy  error   MFLOPs")
    for document in documents:
        accuracy, mflops = document["metrics"]["val_accuracy"], document["metrics"]["mflops"]
        trial = document["provenance"]["trial"]
        print(f"{trial:>5}  {accuracy:>12.4f}  {1 - accuracy:.4f}  {mflops:>6.2f}")


def _output(output: str | None, study: str, kind: str, export_format: str) -> Path:
    if output:
        return Path(output)
    return Path("studies") / f"{study}.{kind}{EXTENSIONS[export_format]}"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a whole number >= 1 (how many trials to write), got {text!r}"
        )
    return value


if __name__ == "__main__":
    run_main(main)
