"""Training engine: BatchNorm handling, deterministic evaluation, one compile per architecture."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import gc
import math
import os
from pathlib import Path
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from regnas import AnyNetSpec, StageSpec, engine
from regnas.archive import architecture_document, save_architecture
from regnas.engine import DeviceData, NonFiniteLossError, TrainConfig, Trainer, _normalize

from conftest import REPO, make_images


SPEC = AnyNetSpec(stages=(StageSpec(1, 16), StageSpec(1, 32)))


@pytest.fixture(scope="module")
def device_data() -> DeviceData:
    images, labels = make_images(320, seed=3)
    return DeviceData.create(
        images[:256, ..., None],
        labels[:256].astype(np.int32),
        images[256:, ..., None],
        labels[256:].astype(np.int32),
        64,
    )


@contextlib.contextmanager
def count_compiles() -> Iterator[list[str]]:
    """Collect one entry per executable that XLA compiles, or loads from the on-disk cache."""
    events: list[str] = []

    def compiled(event: str, duration: float, **kwargs: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(event)

    def loaded(event: str, **kwargs: object) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(compiled)
    jax.monitoring.register_event_listener(loaded)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(compiled)
        jax.monitoring.unregister_event_listener(loaded)


def test_train_epoch_updates_batch_stats(device_data: DeviceData) -> None:
    trainer = Trainer(SPEC, TrainConfig(epochs=1, batch_size=64), device_data)
    before = jax.device_get(trainer.state.batch_stats["stem_bn"]["mean"]).copy()

    result = next(trainer.epochs())

    after = jax.device_get(trainer.state.batch_stats["stem_bn"]["mean"])
    assert not np.allclose(before, after)
    assert math.isfinite(result.train_loss)
    assert 0.0 <= result.eval_accuracy <= 1.0


def test_evaluation_is_deterministic(device_data: DeviceData) -> None:
    trainer = Trainer(SPEC, TrainConfig(epochs=1, batch_size=64), device_data)
    next(trainer.epochs())

    first, second = trainer.evaluate(), trainer.evaluate()

    assert first == second


def test_padded_evaluation_counts_real_images() -> None:
    images, labels = make_images(100, seed=4)
    data = DeviceData.create(
        images[..., None],
        labels.astype(np.int32),
        images[:70, ..., None],
        labels[:70].astype(np.int32),
        batch_size=64,
    )

    # 70 images pad to two batches of 64; only the real ones count.
    assert data.eval_images.shape[0] == 128
    assert data.eval_count == 70
    assert float(data.eval_mask.sum()) == 70


def test_architecture_compiles_once(device_data: DeviceData) -> None:
    config = TrainConfig(epochs=2, batch_size=64)
    warmup = Trainer(SPEC, config, device_data)
    list(warmup.epochs())  # Compiles the stem, the head and the small host-side helpers.

    other = AnyNetSpec(stages=(StageSpec(2, 24),))
    trainer = Trainer(other, config, device_data)
    with count_compiles() as compiles:
        trainer.compile()
    with count_compiles() as later:
        results = list(trainer.epochs())

    assert compiles, "a new block shape must compile in compile()"
    assert later == []
    assert [result.epoch for result in results] == [1, 2]


def test_deeper_network_reuses_compiled_blocks(device_data: DeviceData) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    Trainer(AnyNetSpec(stages=(StageSpec(2, 40),)), config, device_data).compile()

    deeper = Trainer(AnyNetSpec(stages=(StageSpec(6, 40),)), config, device_data)
    with count_compiles() as compiles:
        deeper.compile()

    assert compiles == []


def test_cached_segments_run_after_cache_drop(device_data: DeviceData) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    Trainer(AnyNetSpec(stages=(StageSpec(1, 32),)), config, device_data).compile()
    # A new block shape, so this compile empties JAX's staging caches first.
    Trainer(AnyNetSpec(stages=(StageSpec(1, 72),)), config, device_data).compile()

    again = Trainer(AnyNetSpec(stages=(StageSpec(1, 32),)), config, device_data)
    with count_compiles() as compiles:
        again.compile()
        result = next(again.epochs())

    assert compiles == []
    assert math.isfinite(result.train_loss)


def test_new_trainer_compiles_nothing(device_data: DeviceData) -> None:
    # A width no other test uses, so any compile would be for a new shape. The optimizer state
    # and the moving-average copy are built on the host.
    config = TrainConfig(epochs=1, batch_size=64, ema_decay=0.9)
    # The first trainer of a process compiles JAX's seeding of a random key, once.
    Trainer(SPEC, config, device_data)
    with count_compiles() as compiles:
        Trainer(AnyNetSpec(stages=(StageSpec(1, 88),)), config, device_data)

    assert compiles == []


def test_host_optimizer_state_matches_init(device_data: DeviceData) -> None:
    trainer = Trainer(SPEC, TrainConfig(epochs=1, batch_size=64), device_data)
    for names, state in trainer.state.opt_state.items():
        params = {name: trainer.state.params[name] for name in names}
        expected = trainer.optimizer.init(params if len(names) > 1 else params[names[0]])

        assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(expected)
        for got, want in zip(
            jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(expected), strict=True
        ):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_segmented_step_matches_whole_network(device_data: DeviceData) -> None:
    config = TrainConfig(epochs=1, batch_size=64, warmup_epochs=0)
    spec = AnyNetSpec(
        stages=(StageSpec(1, 16, group_w=8), StageSpec(2, 32, group_w=8, se_ratio=0.25))
    )
    trainer = Trainer(spec, config, device_data)
    params, batch_stats = trainer.state.params, trainer.state.batch_stats
    order = trainer._epoch_order(jax.random.key(5))
    images = _normalize(device_data.train_images[order[0]])
    labels = device_data.train_labels[order[0]]

    def loss_fn(params: dict) -> tuple[jax.Array, dict]:
        logits, updates = trainer.model.apply(
            {"params": params, "batch_stats": batch_stats}, images, True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates["batch_stats"]

    (loss, expected_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, _ = trainer.optimizer.update(grads, trainer.optimizer.init(params), params)
    expected_params = optax.apply_updates(params, updates)

    state, totals = trainer._train_step(trainer.state, jnp.zeros(2), order, 0)

    assert float(totals[0]) == pytest.approx(float(loss), rel=1e-5)
    for expected, actual in ((expected_params, state.params), (expected_stats, state.batch_stats)):
        assert jax.tree_util.tree_structure(dict(expected)) == jax.tree_util.tree_structure(actual)
        for want, got in zip(
            jax.tree_util.tree_leaves(dict(expected)),
            jax.tree_util.tree_leaves(actual),
            strict=True,
        ):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_bfloat16_training_keeps_float32_state(device_data: DeviceData) -> None:
    spec = AnyNetSpec(stages=(StageSpec(1, 16, group_w=8), StageSpec(1, 32, group_w=8)))
    results = {}
    for precision in ("float32", "bfloat16"):
        config = TrainConfig(epochs=2, batch_size=64, precision=precision)
        trainer = Trainer(spec, config, device_data)
        results[precision] = list(trainer.epochs())
        state = trainer.state
        leaves = jax.tree_util.tree_leaves((state.params, state.batch_stats, state.opt_state))
        # Weights, statistics and momentum stay float32; only the step counter is an integer.
        assert {leaf.dtype for leaf in leaves} <= {jnp.dtype("float32"), jnp.dtype("int32")}

    # Close, but not equal: the blocks did compute in bfloat16.
    assert results["bfloat16"][-1].train_loss != results["float32"][-1].train_loss
    for single, half in zip(results["float32"], results["bfloat16"], strict=True):
        assert math.isfinite(half.train_loss)
        assert half.train_loss == pytest.approx(single.train_loss, abs=0.05)
        assert half.eval_accuracy == pytest.approx(single.eval_accuracy, abs=0.1)


def test_config_rejects_unknown_precision() -> None:
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        TrainConfig(precision="float16")


def test_non_finite_loss_raises(device_data: DeviceData) -> None:
    trainer = Trainer(
        SPEC, TrainConfig(epochs=3, batch_size=64, lr=1e30, warmup_epochs=0), device_data
    )

    with pytest.raises(NonFiniteLossError, match="training loss"):
        list(trainer.epochs())


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=float("nan"))


def test_too_few_images_for_a_batch() -> None:
    images = np.zeros((10, 28, 28, 1), np.uint8)
    labels = np.zeros(10, np.int32)
    with pytest.raises(ValueError, match="fewer than one batch"):
        DeviceData.create(images, labels, images, labels, batch_size=64)


def test_label_smoothing_loss(device_data: DeviceData) -> None:
    config = TrainConfig(epochs=1, batch_size=64, label_smoothing=0.2)
    trainer = Trainer(SPEC, config, device_data)
    # Large head weights make the logits far from uniform, where smoothing changes the loss.
    head = trainer.state.params["head"]
    trainer.state.params["head"] = {**head, "kernel": head["kernel"] * 300.0}
    order = trainer._epoch_order(jax.random.key(5))
    images = _normalize(device_data.train_images[order[0]])
    labels = device_data.train_labels[order[0]]
    variables = {"params": trainer.state.params, "batch_stats": trainer.state.batch_stats}
    logits, _ = trainer.model.apply(variables, images, True, mutable=["batch_stats"])
    targets = optax.smooth_labels(jax.nn.one_hot(labels, 10), 0.2)
    expected = float(optax.softmax_cross_entropy(logits, targets).mean())
    plain = float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean())

    _, totals = trainer._train_step(trainer.state, jnp.zeros(2), order, 0)

    assert float(totals[0]) == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(plain, rel=1e-3)


def test_ema_follows_parameters(device_data: DeviceData) -> None:
    trainer = Trainer(SPEC, TrainConfig(epochs=2, batch_size=64, ema_decay=0.5), device_data)
    initial = np.asarray(trainer.state.ema["params"]["head"]["kernel"]).copy()

    list(trainer.epochs(evaluate=False))

    averaged = np.asarray(trainer.state.ema["params"]["head"]["kernel"])
    current = np.asarray(trainer.state.params["head"]["kernel"])
    assert not np.array_equal(averaged, initial)
    assert not np.array_equal(averaged, current)
    # With decay 0.5 the average stays close to the last weights.
    assert np.abs(averaged - current).max() < np.abs(initial - current).max()
    assert trainer.final_variables()["params"] is trainer.state.ema["params"]
    accuracy, _ = trainer.evaluate(averaged=True)
    assert 0.0 <= accuracy <= 1.0


def test_evaluate_averaged_needs_ema(device_data: DeviceData) -> None:
    trainer = Trainer(SPEC, TrainConfig(epochs=1, batch_size=64), device_data)

    with pytest.raises(ValueError, match="ema_decay"):
        trainer.evaluate(averaged=True)


def test_restore_continues_epochs(device_data: DeviceData) -> None:
    config = TrainConfig(epochs=2, batch_size=64, crop_padding=2, flip=True)
    straight = Trainer(SPEC, config, device_data)
    expected = [result.train_loss for result in straight.epochs(evaluate=False)]

    first = Trainer(SPEC, config, device_data)
    next(first.epochs(evaluate=False))
    state = jax.device_get(first.state)
    second = Trainer(SPEC, config, device_data)
    second.restore(state, first.epoch, first.key)
    resumed = [result.train_loss for result in second.epochs(evaluate=False)]

    assert resumed == expected[1:]
    np.testing.assert_array_equal(
        second.state.params["head"]["kernel"], straight.state.params["head"]["kernel"]
    )


def test_epoch_size_samples_each_epoch(device_data: DeviceData) -> None:
    trainer = Trainer(SPEC, TrainConfig(epochs=3, batch_size=64, epoch_size=128), device_data)
    keys = jax.random.split(jax.random.key(0), 3)
    orders = [np.asarray(trainer._epoch_order(key)) for key in keys]

    assert trainer.steps_per_epoch == 2
    assert all(order.shape == (2, 64) and len(np.unique(order)) == 128 for order in orders)
    # Three epochs of 128 from 256 images: the samples differ and reach beyond any one of them.
    assert len(np.unique(np.concatenate(orders))) > 128
    results = list(trainer.epochs(evaluate={2}))
    assert [math.isnan(result.eval_accuracy) for result in results] == [True, False, True]
    assert results[0].images_per_second > 0


def test_epoch_size_above_the_training_images_fails(device_data: DeviceData) -> None:
    with pytest.raises(ValueError, match="epoch_size 512 exceeds the 256 training images"):
        Trainer(SPEC, TrainConfig(batch_size=64, epoch_size=512), device_data)
    with pytest.raises(ValueError, match="epoch_size must be None or an integer >= batch_size"):
        TrainConfig(batch_size=64, epoch_size=32)


def test_config_rejects_bad_recipe_values() -> None:
    with pytest.raises(ValueError, match="crop_padding"):
        TrainConfig(crop_padding=-1)
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=-0.1)
    with pytest.raises(ValueError, match="flip"):
        TrainConfig(flip=1)  # type: ignore[arg-type]


def test_segment_cache_keeps_at_most_its_size(
    device_data: DeviceData, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    first = AnyNetSpec(stages=(StageSpec(1, 48),))
    second = AnyNetSpec(stages=(StageSpec(1, 56),))
    Trainer(first, config, device_data).compile()
    monkeypatch.setenv(engine.SEGMENT_CACHE_ENV, "3")

    trainer = Trainer(second, config, device_data)
    trainer.compile()

    # The stem, the block and the head of the second network; the first one's block is gone.
    assert set(engine._SEGMENT_FUNCTIONS) == {segment.key for segment in trainer.segments}
    again = Trainer(first, config, device_data)
    with count_compiles() as compiles:
        again.compile()
    assert compiles, "an evicted block must compile again, or load from the disk cache"
    assert math.isfinite(next(again.epochs()).train_loss)
    assert len(engine._SEGMENT_FUNCTIONS) == 3


def test_evicted_segments_leave_no_traced_graphs(
    device_data: DeviceData, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jax._src import core

    config = TrainConfig(epochs=1, batch_size=64)
    specs = [AnyNetSpec(stages=(StageSpec(1, width),)) for width in (48, 56)]
    # Room for one network's stem, block and head: each network evicts the other's block.
    monkeypatch.setenv(engine.SEGMENT_CACHE_ENV, "3")

    def graphs_after_rounds(rounds: int) -> int:
        for _ in range(rounds):
            for spec in specs:
                Trainer(spec, config, device_data).compile()
        gc.collect()
        return sum(type(item) is core.Jaxpr for item in gc.get_objects())

    first = graphs_after_rounds(2)
    # Each compile traces the network again; what an evicted segment traced must not stay.
    assert graphs_after_rounds(4) <= first


def test_segment_compiles_for_one_input_size(device_data: DeviceData) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    # The same block reads a 28x28 map after a stride-1 stem and a 14x14 map after a stride-2 one.
    wide = Trainer(AnyNetSpec(stem_stride=1, stages=(StageSpec(1, 48),)), config, device_data)
    narrow = Trainer(AnyNetSpec(stem_stride=2, stages=(StageSpec(1, 48),)), config, device_data)
    wide.compile()
    narrow.compile()

    keys = {wide.segments[1].key, narrow.segments[1].key}
    assert len(keys) == 2
    for key in keys:
        # One executable per function, so the cache bound counts every compiled shape.
        assert [f._cache_size() for f in engine._SEGMENT_FUNCTIONS[key].values()] == [1, 1, 1]


def test_segment_cache_size_rejects_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(engine.SEGMENT_CACHE_ENV, "0")

    with pytest.raises(
        ValueError, match=r"REGNAS_SEGMENT_CACHE must be a positive integer, got '0'"
    ):
        engine.segment_cache_size()


def test_compile_cache_dir_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(engine.COMPILE_CACHE_ENV, raising=False)
    assert engine.compile_cache_dir() == tmp_path / "regnas" / "xla"

    monkeypatch.setenv(engine.COMPILE_CACHE_ENV, str(tmp_path / "mine"))
    assert engine.compile_cache_dir() == tmp_path / "mine"

    monkeypatch.setenv(engine.COMPILE_CACHE_ENV, "OFF")
    assert engine.compile_cache_dir() is None


def bench_tiny(config: Path, cache: str) -> subprocess.CompletedProcess[str]:
    options = ["--steps", "1", "--repeats", "1", "--batch-size", "16", "--json"]
    return subprocess.run(
        [sys.executable, "-m", "regnas.bench", "--config", str(config), *options],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), engine.COMPILE_CACHE_ENV: cache},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_compile_cache_serves_next_process(tmp_path: Path) -> None:
    spec = AnyNetSpec(stages=(StageSpec(1, 16),), stem_w=8)
    config = save_architecture(
        tmp_path / "tiny.json", architecture_document(spec, None, 28, {}, {})
    )
    cache = tmp_path / "xla"

    first = bench_tiny(config, str(cache))
    entries = sorted(path.name for path in cache.iterdir())
    second = bench_tiny(config, str(cache))

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert any(name.endswith("-cache") for name in entries)
    # Everything the second process needed was on disk already: it added no entry.
    assert sorted(path.name for path in cache.iterdir() if path.name.endswith("-cache")) == [
        name for name in entries if name.endswith("-cache")
    ]


def test_compile_cache_off_and_unusable(tmp_path: Path) -> None:
    config = save_architecture(
        tmp_path / "tiny.json",
        architecture_document(AnyNetSpec(stages=(StageSpec(1, 16),)), None, 28, {}, {}),
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    off = bench_tiny(config, "off")
    unusable = bench_tiny(config, str(blocker / "xla"))

    assert off.returncode == 0, off.stderr
    assert unusable.returncode == 2
    assert f"Cannot create the compile cache directory {blocker / 'xla'}" in unusable.stderr
    assert "Set REGNAS_COMPILE_CACHE to a writable directory, or to off." in unusable.stderr
    assert "Traceback" not in unusable.stderr
