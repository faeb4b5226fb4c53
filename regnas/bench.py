"""Measure how fast regnas trains one architecture: ``python -m regnas.bench --config FILE``.

Prints the compile seconds of the train step, the training images per second, and the achieved
train GFLOP/s. The GFLOP/s come from the analytic count (`regnas.complexity`): one multiply-add
is 2 FLOPs here, as for matrix-multiply peaks, and a backward pass costs twice the forward pass,
so one training image costs 6 times the forward multiply-adds. Batches are random images of the
requested size on the device, so data loading plays no part.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from regnas.cli import count_text, run_main, setup_logging
from regnas.spec import PRECISIONS


# Names of the resolved `grouped_conv` settings in the printed line.
GROUPED_CONV_LABELS = {
    "dense": "in CPU forms chosen by shape",
    "native": "as XLA's native grouped convolution",
}


def benchmark(
    spec: Any,
    batch_size: int = 128,
    steps: int = 30,
    image_size: int = 28,
    grouped_conv: str = "auto",
    repeats: int = 3,
    precision: str = "float32",
) -> dict[str, Any]:
    """Time the train step of `spec`; return compile seconds, images/s and GFLOP/s.

    Args:
        spec: The architecture (`regnas.spec.AnyNetSpec`).
        batch_size: Images per step.
        steps: Timed steps per repeat, after two warm-up steps.
        image_size: Height and width of the square input images.
        grouped_conv: Grouped-convolution implementation (see `regnas.models`).
        repeats: Timed repeats; the reported speed is their median.
        precision: The dtype the stem and blocks compute in (`TrainConfig.precision`).
    """
    import jax

    from regnas.complexity import complexity
    from regnas.models import resolve_grouped_conv

    _check_positive(steps=steps, batch_size=batch_size, repeats=repeats)
    trainer = _random_data_trainer(spec, batch_size, image_size, grouped_conv, precision)

    compile_seconds = trainer.compile()

    state, totals = trainer.state, jax.numpy.zeros(2)
    order = trainer._epoch_order(jax.random.key(0))
    for step in range(2):
        state, totals = trainer._train_step(state, totals, order, step % 2)
    jax.block_until_ready(totals)
    speeds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for step in range(steps):
            state, totals = trainer._train_step(state, totals, order, step % 2)
        jax.block_until_ready(totals)
        speeds.append(steps * batch_size / (time.perf_counter() - start))

    images_per_second = statistics.median(speeds)
    multiply_adds = complexity(spec, image_size)["flops"]
    return {
        "images_per_second": round(images_per_second, 1),
        "compile_seconds": round(compile_seconds, 3),
        "train_gflops_per_second": round(images_per_second * 6 * multiply_adds / 1e9, 2),
        "mflops": round(multiply_adds / 1e6, 4),
        "batch_size": batch_size,
        "steps": steps,
        "repeats": repeats,
        "image_size": image_size,
        "grouped_conv": resolve_grouped_conv(grouped_conv),  # type: ignore[arg-type]
        "precision": precision,
        "device": str(jax.devices()[0]),
    }


def segment_times(
    spec: Any,
    batch_size: int = 128,
    image_size: int = 28,
    grouped_conv: str = "auto",
    repeats: int = 20,
    precision: str = "float32",
) -> list[dict[str, Any]]:
    """Time the forward and backward pass of each segment of `spec` (`Trainer.time_segments`)."""
    _check_positive(batch_size=batch_size, repeats=repeats)
    trainer = _random_data_trainer(spec, batch_size, image_size, grouped_conv, precision)
    return trainer.time_segments(repeats)


def _random_data_trainer(
    spec: Any, batch_size: int, image_size: int, grouped_conv: str, precision: str
) -> Any:
    """Return a one-epoch `Trainer` of `spec` on two batches of random images on the device."""
    from regnas.engine import TrainConfig, Trainer

    data = random_device_data(batch_size, image_size, spec.in_channels, spec.num_classes)
    config = TrainConfig(epochs=1, batch_size=batch_size, seed=0, precision=precision)
    return Trainer(spec, config, data, grouped_conv=grouped_conv)  # type: ignore[arg-type]


def random_device_data(
    batch_size: int, image_size: int = 28, channels: int = 1, classes: int = 10
) -> Any:
    """Return `DeviceData` of two training batches of random images and one evaluation batch."""
    import numpy as np

    from regnas.engine import DeviceData

    rng = np.random.default_rng(0)
    shape = (batch_size * 2, image_size, image_size, channels)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.integers(0, classes, batch_size * 2).astype(np.int32)
    return DeviceData.create(images, labels, images[:batch_size], labels[:batch_size], batch_size)


def sample_compile_times(
    count: int, seed: int = 0, batch_size: int = 128, precision: str = "float32"
) -> list[dict[str, Any]]:
    """Compile `count` random architectures of the default search space in turn, as a worker does.

    Segments compiled for earlier architectures are reused, as in a search, so the times are
    what trials see. Returns, per architecture, its MFLOPs, depth, compile seconds, the
    process's resident memory after compiling it (MB), which shows how the cache of compiled
    code grows over a search, and the precision.
    """
    import optuna

    from regnas.engine import TrainConfig, Trainer
    from regnas.study import SearchConfig, sample_at_random

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = random_device_data(batch_size)
    results: list[dict[str, Any]] = []
    for trial, spec in sample_at_random(SearchConfig(), count, seed):
        config = TrainConfig(epochs=1, batch_size=batch_size, precision=precision)
        trainer = Trainer(spec, config, data)
        results.append(
            {
                "mflops": trial.user_attrs["mflops"],
                "depth": sum(spec.stage_depths),
                "compile_seconds": round(trainer.compile(), 3),
                "rss_mb": round(resident_megabytes(), 1),
                "precision": precision,
            }
        )
    return results


def _check_positive(**values: int) -> None:
    """Raise ValueError naming the first of `values` below 1, as its command-line flag."""
    for name, value in values.items():
        if value < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be a positive integer, got {value}.")


def resident_megabytes() -> float:
    """Return the resident memory of this process in MB (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        import resource

        # ru_maxrss is in kilobytes on Linux and in bytes on macOS; the peak, not the current.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.bench",
        description="Measure the training speed and compile time of one architecture.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", metavar="FILE", help="architecture JSON from regnas.export")
    which.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="instead compile N random default-space architectures in turn, as a search worker "
        "does, and print the distribution of their compile times",
    )
    parser.add_argument(
        "--trial",
        type=int,
        default=None,
        help="the trial to time from a file of several (export --pareto or --top-k)",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (default: %(default)s)")
    parser.add_argument(
        "--image-size", type=int, default=28, help="input height and width (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats, median kept (default: 3, or 20 with --segments)",
    )
    parser.add_argument(
        "--grouped-conv",
        choices=("auto", "dense", "native"),
        default="auto",
        help="grouped-convolution implementation (default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="dtype the stem and blocks compute in; bfloat16 is for GPUs (default: %(default)s)",
    )
    parser.add_argument(
        "--segments",
        action="store_true",
        help="with --config: instead time the forward and backward pass of each segment (stem, "
        "block, head) on one batch, median of --repeats calls (default 20 here)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    setup_logging()

    from regnas.archive import load_architecture

    if args.sample:
        times = sample_compile_times(
            args.sample, batch_size=args.batch_size, precision=args.precision
        )
        seconds = [result["compile_seconds"] for result in times]
        if args.json:
            print(json.dumps(times))
            return 0
        for index, result in enumerate(times, start=1):
            print(
                f"{index:>3}: {result['mflops']:.2f} MFLOPs, {result['depth']} blocks, "
                f"compile {result['compile_seconds']:.2f} s, {result['rss_mb']:.0f} MB resident"
            )
        later = seconds[1:] or seconds
        print(
            f"compile seconds in {args.precision}: median {statistics.median(seconds):.2f}, "
            f"first {seconds[0]:.2f}, "
            f"median after the first {statistics.median(later):.2f}, max {max(seconds):.2f}"
        )
        last = times[-1]["rss_mb"]
        text = f"resident memory: {last:.0f} MB after {count_text(len(times), 'architecture')}"
        if len(times) > 10:
            tenth = times[9]["rss_mb"]
            text += f", {tenth:.0f} MB after 10 ({(last / tenth - 1) * 100:+.0f} % since then)"
        print(text)
        return 0
    spec = load_architecture(args.config, trial=args.trial).spec
    if args.segments:
        rows = segment_times(
            spec,
            args.batch_size,
            args.image_size,
            args.grouped_conv,
            args.repeats or 20,
            args.precision,
        )
        if args.json:
            print(json.dumps(rows))
        else:
            _print_segments(rows, args.batch_size, args.precision)
        return 0
    result = benchmark(
        spec,
        args.batch_size,
        args.steps,
        args.image_size,
        args.grouped_conv,
        args.repeats or 3,
        args.precision,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['images_per_second']:.1f} images/s, compile {result['compile_seconds']:.2f} s, "
        f"{result['train_gflops_per_second']:.2f} train GFLOP/s at 2 FLOPs per multiply-add "
        f"({result['mflops']} million multiply-adds per image forward, batch {args.batch_size}, "
        f"{args.image_size}x{args.image_size}, {result['precision']}, grouped convolutions "
        f"{GROUPED_CONV_LABELS[result['grouped_conv']]}, on {result['device']})"
    )
    return 0


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through `parser.error` on a bad number, or on options that the mode does not use."""
    if args.sample is not None and args.sample < 1:
        parser.error(f"--sample must be a positive integer, got {args.sample}.")
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--image-size", args.image_size),
        ("--steps", args.steps),
        ("--repeats", args.repeats),
    ):
        if value is not None and value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}.")
    if args.segments and args.sample:
        parser.error(
            "--segments times one architecture: pass it with --config FILE, not --sample."
        )
    if args.sample:
        options = {
            "--trial": "trial",
            "--steps": "steps",
            "--repeats": "repeats",
            "--image-size": "image_size",
            "--grouped-conv": "grouped_conv",
        }
        ignored = [
            flag
            for flag, name in options.items()
            if getattr(args, name) != parser.get_default(name)
        ]
        if ignored:
            parser.error(
                "--sample compiles default-space networks for 28x28 images with regnas's "
                f"choice of grouped convolutions and times no training, so it cannot use "
                f"{' and '.join(ignored)}. Drop "
                f"{'it' if len(ignored) == 1 else 'them'}, or time one architecture with "
                "--config FILE."
            )


def _print_segments(rows: list[dict[str, Any]], batch_size: int, precision: str) -> None:
    total = sum(row["forward_ms"] + row["backward_ms"] for row in rows)
    print(f"{'segment':<8} {'input':>12} {'forward ms':>11} {'backward ms':>12} {'share':>6}")
    for row in rows:
        shape = "x".join(str(size) for size in row["input"])
        both = row["forward_ms"] + row["backward_ms"]
        # The head's loss and gradient are one executable, timed as its backward pass.
        forward = "-" if row is rows[-1] else f"{row['forward_ms']:.2f}"
        print(
            f"{row['segment']:<8} {shape:>12} {forward:>11} "
            f"{row['backward_ms']:>12.2f} {both / total:>6.1%}"
        )
    print(
        f"total {total:.1f} ms per step of {batch_size} images in {precision}, as if run one "
        f"by one: {batch_size / total * 1e3:.0f} images/s. The head's loss and gradient are one "
        "executable, counted as backward."
    )


if __name__ == "__main__":
    run_main(main)
