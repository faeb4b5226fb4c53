"""Split the compile time of random networks of the default search space by executable.

Usage: python scripts/bench_compile.py [--sample N] [--threads N] [--option NAME=VALUE ...]

`regnas.engine.Trainer` compiles a network as separate executables: the stem's, each block
shape's and the head's forward pass, backward pass (with the SGD update) and evaluation pass.
For the first N architectures that ``python -m regnas.bench --sample N`` compiles, this script
traces and lowers the executables of every segment shape not seen in an earlier network, as the
engine does, then compiles them. It prints the seconds of tracing and lowering, and of compiling
each kind of executable. The disk caches of compiled code (regnas's and JAX's) stay off, so every
shape compiles.

--threads N compiles the executables of a network on N threads. --option passes an XLA compiler
option to every executable, on top of regnas's own (`regnas.engine.CPU_COMPILER_OPTIONS`), for
example ``--option xla_backend_optimization_level=1``.
"""

from __future__ import annotations

import argparse
import collections
from concurrent.futures import ThreadPoolExecutor
import os
import time
from typing import Any

from bench_stride2 import positive_int


def option(text: str) -> tuple[str, Any]:
    """Parse NAME=VALUE into a compiler option: true and false become bools, digits an int."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME=VALUE. Pass, for example, xla_backend_optimization_level=1."
        )
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    return name, int(value) if value.lstrip("-").isdigit() else value


def lowered_segments(trainer: Any, seen: set[Any]) -> list[tuple[str, Any]]:
    """Return (kind, lowered executable) for each segment of `trainer` with a key not in `seen`."""
    import jax
    import jax.numpy as jnp

    from regnas.engine import _pick

    data, state = trainer.data, trainer.state
    params, stats, opt_state = state.params, state.batch_stats, state.opt_state
    batch = trainer.config.batch_size
    order = jax.ShapeDtypeStruct((1, batch), jnp.int32)
    index = jax.ShapeDtypeStruct((), jnp.int32)
    totals = jax.ShapeDtypeStruct((2,), jnp.float32)
    stem, *blocks, head = trainer.segments
    lowered = []

    def add(segment: Any, kind: str, own_params: Any, own_stats: Any, forward_args: tuple) -> Any:
        """Lower one segment's three executables; return the shape of its output."""
        functions = trainer._functions(segment)
        output, _, pullback = jax.eval_shape(functions["forward"], *forward_args)
        if segment.key not in seen:
            seen.add(segment.key)
            evaluate_args = forward_args
            if kind == "stem":
                evaluate_args = (own_params, own_stats, data.eval_images, index)
            lowered.append((f"{kind} forward", functions["forward"].lower(*forward_args)))
            backward = functions["backward"]
            lowered.append(
                (
                    f"{kind} backward",
                    backward.lower(pullback, output, own_params, opt_state[segment.names]),
                )
            )
            lowered.append((f"{kind} evaluation", functions["evaluate"].lower(*evaluate_args)))
        return output

    stem_params, stem_stats = _pick(params, stem.names), _pick(stats, stem.names)
    x = add(
        stem,
        "stem",
        stem_params,
        stem_stats,
        (stem_params, stem_stats, data.train_images, order, index),
    )
    for segment in blocks:
        (name,) = segment.names
        x = add(segment, "block", params[name], stats[name], (params[name], stats[name], x))
    if head.key not in seen:
        seen.add(head.key)
        functions = trainer._functions(head)
        train_args = (
            params["head"],
            opt_state[head.names],
            x,
            data.train_labels,
            order,
            index,
            totals,
        )
        eval_args = (params["head"], x, data.eval_labels, data.eval_mask, index, totals)
        lowered.append(("head train", functions["train"].lower(*train_args)))
        lowered.append(("head evaluation", functions["evaluate"].lower(*eval_args)))
    return lowered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=positive_int, default=6, help="networks (default: 6)")
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="compile threads per network (default: 1)"
    )
    parser.add_argument(
        "--option",
        type=option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="XLA compiler option for every executable; may repeat",
    )
    args = parser.parse_args()
    os.environ["REGNAS_COMPILE_CACHE"] = "off"

    import jax
    import optuna

    from regnas.bench import random_device_data
    from regnas.engine import CPU_COMPILER_OPTIONS, TrainConfig, Trainer
    from regnas.study import SearchConfig, sample_at_random

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    batch = 128
    data = random_device_data(batch)
    options = {**CPU_COMPILER_OPTIONS, **dict(args.option)}
    # Every shape must compile, also where the user set JAX's own cache directory.
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        jax.jit(lambda x: x + 1).lower(1.0).compile(options)
    except jax.errors.JaxRuntimeError as error:
        parser.error(f"--option: XLA rejected the options {dict(args.option)}: {error}")

    def compile_one(item: tuple[str, Any]) -> tuple[str, float]:
        """Compile one lowered executable; return its kind and the seconds taken."""
        begin = time.perf_counter()
        item[1].compile(options)
        return item[0], time.perf_counter() - begin

    seen: set[Any] = set()
    seconds: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    lowering = compiling = 0.0
    pool = ThreadPoolExecutor(args.threads)
    specs = [spec for _, spec in sample_at_random(SearchConfig(), args.sample, 0)]
    for number, spec in enumerate(specs, start=1):
        trainer = Trainer(spec, TrainConfig(epochs=1, batch_size=batch), data)
        start = time.perf_counter()
        lowered = lowered_segments(trainer, seen)
        lowering += time.perf_counter() - start

        start = time.perf_counter()
        for kind, elapsed in pool.map(compile_one, lowered):
            seconds[kind] += elapsed
            counts[kind] += 1
        network = time.perf_counter() - start
        compiling += network
        print(
            f"network {number}: {len(lowered)} new executables, "
            f"{sum(spec.stage_depths)} blocks, compiled in {network:.2f} s",
            flush=True,
        )
    if args.option:
        print("options: " + ", ".join(f"{name}={value}" for name, value in args.option))
    print(f"{'executable':<18} {'count':>5} {'compile s':>10}")
    for kind, total in seconds.most_common():
        print(f"{kind:<18} {counts[kind]:>5} {total:>10.2f}")
    threads = "" if args.threads == 1 else f" on {args.threads} threads (kinds overlap)"
    print(f"tracing and lowering {lowering:.2f} s, compiling {compiling:.2f} s{threads}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
