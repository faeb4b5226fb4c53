"""Measure the engine choices that docs/benchmarks.md records.

Usage: python scripts/bench_engine.py [--steps 20] [--processes N]

Prints, for the reference AnyNet (stem 16, stages (1, 24), (2, 56), (4, 152), group width 8,
batch 128 of 28x28x1, float32):
  - train images/s with XLA's native grouped convolution and with the block-diagonal dense kernel;
  - train images/s with one host dispatch per step and with the steps inside `lax.scan`;
  - seconds to initialize a 12-block network with `model.init` and with `init_variables`.
With --processes N it instead runs N copies at once, each pinned to its own core, and prints
their total images/s (compare with one process on all cores).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

from regnas import AnyNetSpec, RegNetParams, StageSpec
from regnas.models import AnyNet, init_variables


REFERENCE = AnyNetSpec(
    stages=tuple(
        StageSpec(depth, width, group_w=8) for depth, width in [(1, 24), (2, 56), (4, 152)]
    )
)
BATCH = 128


def train_images_per_second(grouped_conv: str, steps: int, scan: bool = False) -> float:
    model = AnyNet(REFERENCE, grouped_conv=grouped_conv)  # type: ignore[arg-type]
    variables = init_variables(model, 0, (1, 28, 28, 1))
    optimizer = optax.sgd(0.01, momentum=0.9)
    state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
    images = jax.random.normal(jax.random.key(0), (BATCH, 28, 28, 1))
    labels = jnp.zeros(BATCH, jnp.int32)

    def step(state: Any, _: Any = None) -> tuple[Any, jax.Array]:
        params, batch_stats, opt_state = state

        def loss_fn(params: Any) -> tuple[jax.Array, Any]:
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                images,
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    if scan:
        run = jax.jit(lambda state: jax.lax.scan(step, state, None, length=steps))
        state, loss = run(state)  # compile and warm up
        jax.block_until_ready(loss)
        start = time.perf_counter()
        state, loss = run(state)
        jax.block_until_ready(loss)
        return steps * BATCH / (time.perf_counter() - start)

    run = jax.jit(step)
    for _ in range(3):
        state, loss = run(state)
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = run(state)
    jax.block_until_ready(loss)
    return steps * BATCH / (time.perf_counter() - start)


def init_seconds() -> tuple[float, float]:
    spec = RegNetParams(depth=12, w0=24, wa=20.0, wm=2.2, group_w=8).to_anynet()
    model = AnyNet(spec)
    start = time.perf_counter()
    jax.block_until_ready(model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False))
    flax_seconds = time.perf_counter() - start
    other = AnyNet(RegNetParams(depth=11, w0=24, wa=21.0, wm=2.2, group_w=8).to_anynet())
    start = time.perf_counter()
    init_variables(other, 0, (1, 28, 28, 1))
    return flax_seconds, time.perf_counter() - start


def _pinned_worker(core: int, steps: int, queue: Any) -> None:
    os.sched_setaffinity(0, {core})
    queue.put(train_images_per_second("dense", steps))


def parallel_images_per_second(processes: int, steps: int) -> list[float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    cores = sorted(os.sched_getaffinity(0))
    workers = [
        context.Process(target=_pinned_worker, args=(cores[i % len(cores)], steps, queue))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed train steps")
    parser.add_argument("--processes", type=int, default=0, help="pinned processes to run")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, cores {os.cpu_count()}")
    if args.processes:
        results = parallel_images_per_second(args.processes, args.steps)
        print(
            f"{args.processes} pinned processes: {sum(results):.0f} images/s in total "
            f"({', '.join(f'{value:.0f}' for value in results)})"
        )
        return
    print(
        f"one process, dense kernel: {train_images_per_second('dense', args.steps):.0f} images/s"
    )
    print(
        f"one process, native grouped conv: "
        f"{train_images_per_second('native', max(3, args.steps // 4)):.0f} images/s"
    )
    print(
        f"one process, dense, steps in lax.scan: "
        f"{train_images_per_second('dense', args.steps, scan=True):.0f} images/s"
    )
    flax_seconds, host_seconds = init_seconds()
    print(f"initialization: model.init {flax_seconds:.2f}s, init_variables {host_seconds:.2f}s")


if __name__ == "__main__":
    main()
