"""Training engine: SGD on device-resident data, one compiled executable per network segment.

The whole dataset is placed on the device once. Each step gathers its batch there by index, so the
host sends only a step number per step. Batches have fixed shapes, and `Trainer.compile` compiles
every segment a network needs before training, which also separates compile time from train time.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Collection, Iterator
import ctypes
import dataclasses
import functools
import gc
import math
import os
from pathlib import Path
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from regnas.augment import augment_images
from regnas.models import (
    AnyNet,
    BottleneckBlock,
    GroupedConvImpl,
    Stem,
    check_precision,
    init_variables,
    resolve_grouped_conv,
)
from regnas.spec import AnyNetSpec


# Per-pixel statistics of the Fashion-MNIST training set, in [0, 1] units.
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimization settings of one training run.

    Attributes:
        epochs: Number of epochs.
        batch_size: Images per step; the last partial batch of each epoch is dropped.
        epoch_size: Training images per epoch, drawn at random from the training set anew each
            epoch; None makes every epoch one pass over the whole training set.
        lr: Peak learning rate, reached after the warm-up.
        momentum: Nesterov momentum of SGD.
        weight_decay: L2 penalty on convolution and dense kernels (not on BatchNorm or biases).
        warmup_epochs: Length of the linear warm-up; the cosine decay to zero follows.
        seed: Seed of parameter initialization, batch order and augmentation.
        crop_padding: Zero padding, in pixels, around each training image before a random crop
            back to its size; 0 disables random cropping.
        flip: Whether to mirror half of the training images left to right, at random.
        label_smoothing: Weight of the uniform distribution mixed into the one-hot targets of
            the training loss; 0 trains on plain cross-entropy.
        ema_decay: Decay of an exponential moving average of the parameters and BatchNorm
            statistics, updated after every step; 0 keeps no average.
        precision: The dtype the stem and blocks compute in: "float32", or "bfloat16" for
            GPUs. Parameters, gradients, BatchNorm, the head and the loss stay float32.

    The recipe fields `crop_padding`, `flip`, `label_smoothing` and `ema_decay` default to off,
    which is how searches train.
    """

    epochs: int = 10
    batch_size: int = 128
    epoch_size: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    seed: int = 0
    crop_padding: int = 0
    flip: bool = False
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    precision: str = "float32"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}.")
        size = self.epoch_size
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or size < self.batch_size
        ):
            raise ValueError(
                f"epoch_size must be None or an integer >= batch_size ({self.batch_size}), "
                f"got {size!r}."
            )
        padding = self.crop_padding
        if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= 8:
            raise ValueError(f"crop_padding must be an integer in [0, 8] pixels, got {padding!r}.")
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be True or False, got {self.flip!r}.")
        for name in ("label_smoothing", "ema_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        check_precision(self.precision)

    @property
    def augments(self) -> bool:
        """Whether training images are cropped or flipped at random."""
        return self.crop_padding > 0 or self.flip


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class DeviceData:
    """Train and evaluation arrays placed on the device once, shared by every trial.

    Evaluation arrays are padded to whole batches; `eval_mask` is 1 for real images.
    """

    train_images: jax.Array
    train_labels: jax.Array
    eval_images: jax.Array
    eval_labels: jax.Array
    eval_mask: jax.Array
    eval_count: int

    @classmethod
    def create(
        cls,
        train_images: np.ndarray,
        train_labels: np.ndarray,
        eval_images: np.ndarray,
        eval_labels: np.ndarray,
        batch_size: int,
    ) -> DeviceData:
        if len(train_images) < batch_size:
            raise ValueError(
                f"The training set has {len(train_images)} images, fewer than one batch of "
                f"{batch_size}; raise --train-size or lower --batch-size."
            )
        count = len(eval_images)
        padded = -(-count // batch_size) * batch_size
        pad = padded - count
        images = np.concatenate([eval_images, np.zeros((pad, *eval_images.shape[1:]), np.uint8)])
        labels = np.concatenate([eval_labels, np.zeros(pad, np.int32)])
        mask = np.concatenate([np.ones(count, np.float32), np.zeros(pad, np.float32)])
        put = jax.device_put
        return cls(
            put(train_images), put(train_labels), put(images), put(labels), put(mask), count
        )


@dataclasses.dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    eval_accuracy: float
    eval_loss: float
    train_seconds: float
    images_per_second: float


def _normalize(images: jax.Array) -> jax.Array:
    return (images.astype(jnp.float32) / 255.0 - PIXEL_MEAN) / PIXEL_STD


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with Nesterov momentum, linear warm-up, cosine decay and decoupled-mask weight decay."""
    total = config.epochs * steps_per_epoch
    warmup = min(int(config.warmup_epochs * steps_per_epoch), max(total - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.lr, warmup_steps=warmup, decay_steps=total, end_value=0.0
    )
    decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)  # noqa: E731
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=config.momentum, nesterov=True),
    )


@dataclasses.dataclass(frozen=True)
class _Segment:
    """One part of the network that compiles on its own: the stem, one block, or the head.

    Attributes:
        names: The top-level names of its variables in AnyNet's variable tree.
        key: Everything its compiled code depends on besides array shapes. Segments with equal
            keys share compiled code, within a network and across networks.
    """

    names: tuple[str, ...]
    key: tuple[Any, ...]


@dataclasses.dataclass
class TrainState:
    """Parameters, BatchNorm statistics and optimizer state, as trees keyed like AnyNet's.

    `ema` is the moving average of ``{"params": ..., "batch_stats": ...}`` when
    `TrainConfig.ema_decay` is above 0, and None otherwise.
    """

    params: dict[str, Any]
    batch_stats: dict[str, Any]
    opt_state: dict[tuple[str, ...], Any]
    ema: dict[str, Any] | None = None


# Segment keys with the input shapes that `Trainer.compile` has compiled them for.
_COMPILED_SIGNATURES: set[tuple[Any, ...]] = set()
# Compiled segment functions shared by every Trainer of the process, keyed by `_Segment.key`,
# least recently used first. A key contains the input size, so each function compiles for one
# shape. Compiled code grew a process by about 13 MB per new network of the default space, so
# `Trainer.compile` drops the least recently used beyond `segment_cache_size()`.
_SEGMENT_FUNCTIONS: collections.OrderedDict[tuple[Any, ...], dict[str, Any]] = (
    collections.OrderedDict()
)
SEGMENT_CACHE_ENV = "REGNAS_SEGMENT_CACHE"
DEFAULT_SEGMENT_CACHE = 48


def segment_cache_size() -> int:
    """Return how many compiled segments a process keeps: ``$REGNAS_SEGMENT_CACHE``, or 48.

    Without a bound, a worker's memory grew from 1.2 GB after 10 random networks of the default
    space to 3.2 GB after 200, against 0.7 and 1.0 GB with it. Those 200 networks compiled in
    less than half the time, though (docs/benchmarks.md), because a larger cache recompiles less
    often.
    """
    text = os.environ.get(SEGMENT_CACHE_ENV, "")
    if not text:
        return DEFAULT_SEGMENT_CACHE
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"{SEGMENT_CACHE_ENV} must be a positive integer, got {text!r}. Unset it to keep "
            f"{DEFAULT_SEGMENT_CACHE} compiled segments."
        )
    return int(text)


COMPILE_CACHE_ENV = "REGNAS_COMPILE_CACHE"
# Entries measured about 10 KB each on CPU (docs/benchmarks.md), so the bound is rarely reached.
# Beyond it, JAX deletes the least recently used entries.
COMPILE_CACHE_MAX_BYTES = 1 << 30


def compile_cache_dir() -> Path | None:
    """Return the directory of the on-disk cache of compiled code, or None when it is off.

    ``$REGNAS_COMPILE_CACHE`` names the directory, and ``off`` (or 0, false, no, none) turns the
    cache off. The default is ``$XDG_CACHE_HOME/regnas/xla`` (``~/.cache/regnas/xla``).
    """
    text = os.environ.get(COMPILE_CACHE_ENV, "")
    if text.lower() in ("off", "0", "false", "no", "none"):
        return None
    if text:
        return Path(text)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "regnas" / "xla"


def prepare_compile_cache() -> Path | None:
    """Create the directory of the on-disk cache of compiled code; return it, or None when off.

    A directory the user set for JAX (``JAX_COMPILATION_CACHE_DIR``) is returned as it is.
    Searches call this before they create a study, so that a bad directory stores nothing.

    Raises:
        ValueError: The directory cannot be created.
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    directory = compile_cache_dir()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"Cannot create the compile cache directory {directory}: {error.strerror}. Set "
            f"{COMPILE_CACHE_ENV} to a writable directory, or to off."
        ) from None
    return directory


def use_compile_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache in `prepare_compile_cache()`'s directory.

    Workers of a search share the directory, so a block shape that one worker compiled loads
    in the others, in later searches, and after `Trainer.compile` evicted it from memory.

    Returns:
        The directory, or None when the cache is off.

    Raises:
        ValueError: The directory cannot be created.
    """
    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    directory = prepare_compile_cache()
    if directory is None:
        return None
    # Segments compile in 0.1-1 s each, below JAX's default threshold of 1 s for caching.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_MAX_BYTES)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    return directory


def _evict_segments(keep: set[tuple[Any, ...]]) -> int:
    """Drop the least recently used compiled segments beyond the cache size, except `keep`."""
    limit, evicted = segment_cache_size(), 0
    for key in list(_SEGMENT_FUNCTIONS):
        if len(_SEGMENT_FUNCTIONS) <= limit:
            break
        if key not in keep:
            del _SEGMENT_FUNCTIONS[key]
            evicted += 1
    if evicted:
        _COMPILED_SIGNATURES.difference_update(
            {
                signature
                for signature in _COMPILED_SIGNATURES
                if signature[0] not in _SEGMENT_FUNCTIONS
            }
        )
        gc.collect()
    # Return freed pages after every network, not only after an eviction, so that resident
    # memory shows what the process still uses. It costs 4-25 ms (docs/benchmarks.md).
    _return_free_memory()
    return evicted


def _drop_staging_caches() -> None:
    """Empty JAX's caches of traced and lowered functions, but keep the compiled code.

    Those caches are keyed by function, and the segment functions of evicted networks stayed
    in them, so a worker's memory grew by about 5 MB per network (docs/benchmarks.md). Each
    jitted function keeps its own compiled executables, so cached segments still run without
    tracing or compiling again. JAX has no public call that clears only these caches:
    `jax.clear_caches()` also drops every compiled executable.
    """
    try:
        from jax._src import api_util
        from jax._src import util as jax_util

        jax_util.clear_all_caches()
        # clear_all_caches misses this cache of 4,096 donation patterns. Its keys are backward
        # passes' argument trees, which contain traced graphs (0.5 MB per network).
        api_util.donation_vector.cache_clear()
    except (ImportError, AttributeError):
        pass  # A JAX without these private helpers: memory grows as it did before.


def _initial_optimizer_state(optimizer: optax.GradientTransformation, params: Any) -> Any:
    """Return `optimizer.init(params)`, built on the host instead of compiled.

    `make_optimizer`'s state starts as zeros (momentum and step count), and `optimizer.init`
    would compile one small fill executable per parameter shape. Those took about 0.5 s of
    a new network's compile time, because the staging-cache drop makes them compile again for
    every network (docs/benchmarks.md).
    """
    # NOTE: zeros are right only for optimizers whose every state starts at zero, as
    # make_optimizer's does. tests/test_engine.py compares this with `optimizer.init`.
    shapes = jax.eval_shape(optimizer.init, params)
    return jax.device_put(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes))


def _device_copy(tree: Any) -> Any:
    """Return a copy of a tree of device arrays, made through the host.

    `jnp.copy` compiles one small executable per array shape. A copy through host memory
    compiles nothing, and the trees copied here (parameters, optimizer state) are a few MB.
    """
    return jax.device_put(jax.tree_util.tree_map(np.array, tree))


def _return_free_memory() -> None:
    """Ask glibc to hand freed heap pages back to the system, so that RSS shows the eviction."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # Not glibc: the memory is still free for reuse within the process.


class Trainer:
    """Trains one architecture on `DeviceData`; `compile` first, then `epochs()`.

    The network runs segment by segment: the stem, each bottleneck block, and the head (pooling,
    classifier and loss) are separate XLA executables, called in turn on each batch, forward
    then backward, and each segment's backward pass also applies its SGD update. Blocks with
    the same shapes share one executable, within a network and across networks, so a new
    architecture compiles only the block shapes the process has not seen yet, and compile time
    does not grow with depth. One executable for the whole train step compiled 4-5 s for a
    13-block network on this project's 2-core machine, for the same speed per step
    (docs/benchmarks.md).

    Args:
        spec: The architecture.
        config: Optimization settings.
        data: Device-resident data.
        grouped_conv: Grouped-convolution implementation (see `regnas.models`).
    """

    def __init__(
        self,
        spec: AnyNetSpec,
        config: TrainConfig,
        data: DeviceData,
        grouped_conv: GroupedConvImpl = "auto",
    ) -> None:
        use_compile_cache()
        self.spec, self.config, self.data = spec, config, data
        self.model = AnyNet(spec, grouped_conv=grouped_conv, precision=config.precision)
        self.impl = resolve_grouped_conv(grouped_conv)
        available = len(data.train_images)
        if config.epoch_size is not None and config.epoch_size > available:
            raise ValueError(
                f"epoch_size {config.epoch_size} exceeds the {available} training images."
            )
        self.steps_per_epoch = (config.epoch_size or available) // config.batch_size
        self.optimizer = make_optimizer(config, self.steps_per_epoch)
        self.segments = self._segments()
        self.state = self._init_state()
        # Epochs trained so far, and the key that the next epoch splits its batch order and
        # augmentation key from; a checkpoint stores both (see `restore`).
        self.epoch = 0
        self.key = jax.random.key(config.seed + 1)
        self._compiled = False

    def _segments(self) -> list[_Segment]:
        spec, impl = self.spec, self.impl
        # The optimizer's settings are part of every key, because each backward pass updates.
        optimizer_key = (dataclasses.replace(self.config, seed=0), self.steps_per_epoch)
        stem_key = ("stem", spec.in_channels, spec.stem_w, spec.stem_stride, optimizer_key)
        segments = [_Segment(("stem", "stem_bn"), stem_key)]
        w_in, sizes = spec.stem_w, spec.output_sizes(self.data.train_images.shape[1])
        for stage_index, stage in enumerate(spec.stages, start=1):
            for block_index in range(1, stage.depth + 1):
                stride = stage.stride if block_index == 1 else 1
                # A stage's first block reads the previous stage's map, the others its own. With
                # the input size in the key, each segment compiles for one input shape, and the
                # cache bound counts compiled shapes (docs/benchmarks.md). Depth is left out.
                size = sizes[stage_index - 1] if block_index == 1 else sizes[stage_index]
                block = dataclasses.replace(stage, depth=1)
                key = ("block", block, stride, w_in, size, impl, optimizer_key)
                segments.append(_Segment((f"s{stage_index}_b{block_index}",), key))
                w_in = stage.width
        head_key = ("head", w_in, sizes[-1], spec.num_classes, optimizer_key)
        segments.append(_Segment(("head",), head_key))
        return segments

    def _init_state(self) -> TrainState:
        shape = (1, *self.data.train_images.shape[1:])
        variables = jax.device_put(init_variables(self.model, self.config.seed, shape))
        params, batch_stats = dict(variables["params"]), dict(variables["batch_stats"])
        # The stem's optimizer state covers two layers; a block's or the head's covers one.
        opt_state = {
            segment.names: _initial_optimizer_state(
                self.optimizer,
                _pick(params, segment.names)
                if len(segment.names) > 1
                else params[segment.names[0]],
            )
            for segment in self.segments
        }
        ema = None
        if self.config.ema_decay:
            # Copies, because the train step donates the buffers of `params`.
            ema = _device_copy({"params": params, "batch_stats": batch_stats})
        return TrainState(params, batch_stats, opt_state, ema)

    def restore(self, state: TrainState, epoch: int, key: jax.Array) -> None:
        """Continue from a checkpoint: `epochs()` then trains epochs ``epoch + 1`` onwards.

        Args:
            state: The state after `epoch` epochs, with this trainer's tree structure.
            epoch: Epochs already trained, in [0, config.epochs].
            key: The value of `key` after that epoch.
        """
        if not 0 <= epoch <= self.config.epochs:
            raise ValueError(f"epoch must be in [0, {self.config.epochs}], got {epoch}.")
        put = jax.device_put
        ema = None if state.ema is None else put(state.ema)
        self.state = TrainState(
            put(state.params), put(state.batch_stats), put(state.opt_state), ema
        )
        self.epoch, self.key = epoch, key

    def _functions(self, segment: _Segment) -> dict[str, Any]:
        functions = _SEGMENT_FUNCTIONS.get(segment.key)
        if functions is not None:
            _SEGMENT_FUNCTIONS.move_to_end(segment.key)
        else:
            kind = segment.key[0]
            if kind == "stem":
                functions = _stem_functions(self.spec, self.optimizer, self.config)
            elif kind == "block":
                _, block, stride, _, _, impl, _ = segment.key
                functions = _block_functions(BottleneckBlock(block, stride, impl), self.optimizer)
            else:
                functions = _head_functions(
                    self.spec.num_classes, self.optimizer, self.config.label_smoothing
                )
            _SEGMENT_FUNCTIONS[segment.key] = functions
        return functions

    def compile(self) -> float:
        """Compile every segment this process has not compiled yet; return the seconds taken.

        Compiling happens by running one train step and one evaluation batch on copies of the
        state, so training and evaluation afterwards compile nothing. Then the least recently
        used segments of other networks are dropped beyond `segment_cache_size()`.
        """
        start = time.perf_counter()
        # The jit caches of augmentation and EMA make these calls cheap after the first.
        if self.config.augments:
            jax.block_until_ready(self._augmented_images(jax.random.key(0)))
        if self.state.ema is not None:
            copy_ema = _device_copy(self.state.ema)
            state = self.state
            jax.block_until_ready(
                _update_ema(copy_ema, state.params, state.batch_stats, self.config.ema_decay, 0)
            )
        signatures = self._signatures()
        if signatures <= _COMPILED_SIGNATURES:
            _evict_segments({segment.key for segment in self.segments})
            self._compiled = True
            return time.perf_counter() - start
        # Tracing a new network fills JAX's staging caches with about 5 MB per network of the
        # default space. Compiled segments stay callable without them, so they are emptied.
        _drop_staging_caches()
        # Epochs unpack a split key and sum into new arrays. Compile those small operations now.
        first, _ = jax.random.split(self.key)
        jax.block_until_ready((first, jnp.zeros(2)))
        state = TrainState(
            _device_copy(self.state.params),
            _device_copy(self.state.batch_stats),
            _device_copy(self.state.opt_state),
        )
        order = self._epoch_order(jax.random.key(0))
        _, totals = self._train_step(state, jnp.zeros(2), order, 0)
        jax.block_until_ready(totals)
        jax.block_until_ready(self._eval_batch(self.state, jnp.zeros(2), 0))
        _COMPILED_SIGNATURES.update(signatures)
        _evict_segments({segment.key for segment in self.segments})
        self._compiled = True
        return time.perf_counter() - start

    def _signatures(self) -> set[tuple[Any, ...]]:
        """Return each segment's key with the data shapes its executables are compiled for."""
        data = self.data
        shapes = (data.train_images.shape, data.eval_images.shape, self.config.batch_size)
        return {(segment.key, shapes) for segment in self.segments}

    def _train_step(
        self,
        state: TrainState,
        totals: jax.Array,
        order: jax.Array,
        step: int,
        images: jax.Array | None = None,
    ) -> tuple[TrainState, jax.Array]:
        """Run one SGD step on ``images[order[step]]``; `images` defaults to the training set."""
        data, params, stats = self.data, state.params, state.batch_stats
        images = data.train_images if images is None else images
        new_params, new_stats, new_opt = dict(params), dict(stats), dict(state.opt_state)
        stem, *blocks, head = self.segments
        x, stem_stats, stem_vjp = self._functions(stem)["forward"](
            _pick(params, stem.names), _pick(stats, stem.names), images, order, step
        )
        new_stats.update(stem_stats)
        pullbacks = []
        for segment in blocks:
            (name,) = segment.names
            x, new_stats[name], pullback = self._functions(segment)["forward"](
                params[name], stats[name], x
            )
            pullbacks.append((segment, pullback))
        grad_x, head_params, new_opt[head.names], totals = self._functions(head)["train"](
            params["head"], state.opt_state[head.names], x, data.train_labels, order, step, totals
        )
        new_params["head"] = head_params
        for segment, pullback in reversed(pullbacks):
            (name,) = segment.names
            grad_x, new_params[name], new_opt[segment.names] = self._functions(segment)[
                "backward"
            ](pullback, grad_x, params[name], state.opt_state[segment.names])
        stem_params, new_opt[stem.names] = self._functions(stem)["backward"](
            stem_vjp, grad_x, _pick(params, stem.names), state.opt_state[stem.names]
        )
        new_params.update(stem_params)
        return TrainState(new_params, new_stats, new_opt, state.ema), totals

    def _eval_batch(self, state: TrainState, totals: jax.Array, batch: int) -> jax.Array:
        data, params, stats = self.data, state.params, state.batch_stats
        stem, *blocks, head = self.segments
        x = self._functions(stem)["evaluate"](
            _pick(params, stem.names), _pick(stats, stem.names), data.eval_images, batch
        )
        for segment in blocks:
            (name,) = segment.names
            x = self._functions(segment)["evaluate"](params[name], stats[name], x)
        return self._functions(head)["evaluate"](
            params["head"], x, data.eval_labels, data.eval_mask, batch, totals
        )

    def epochs(
        self,
        evaluate: bool | Collection[int] = True,
        on_step: Callable[[int, jax.Array], None] | None = None,
    ) -> Iterator[EpochResult]:
        """Train the remaining epochs one by one, yielding the metrics after each.

        Batch order and augmentation of an epoch depend only on the seed and the epoch number,
        so a run restored from a checkpoint (`restore`) continues exactly as an uninterrupted
        one would. `epoch`, `key` and `state` are up to date whenever a result is yielded.

        Args:
            evaluate: Whether to evaluate after every epoch (True), after none (False), or
                the 1-based numbers of the epochs to evaluate after. A result without
                evaluation has NaN in its evaluation fields. False keeps a test set out of
                training decisions.
            on_step: Called after every step with the 1-based step number within the epoch and
                the device array of summed (loss, accuracy) so far. Reading that array waits
                for the device, so a progress display should read it only now and then.

        Raises:
            NonFiniteLossError: The mean training loss of an epoch was NaN or infinite.
        """
        if not self._compiled:
            self.compile()
        while self.epoch < self.config.epochs:
            epoch = self.epoch + 1
            self.key, epoch_key = jax.random.split(self.key)
            start = time.perf_counter()
            order, totals = self._epoch_order(epoch_key), jnp.zeros(2)
            epoch_images = self.data.train_images
            if self.config.augments:
                # A key derived from the epoch key leaves the batch order as without augmentation.
                epoch_images = self._augmented_images(jax.random.fold_in(epoch_key, 1))
            # NOTE: one host dispatch per segment and step on purpose. The same steps inside
            # `lax.scan` ran 8x slower on XLA:CPU (jax 0.10.2) because convolutions in a loop
            # body miss the fast path (scripts/bench_engine.py, docs/benchmarks.md).
            for step in range(self.steps_per_epoch):
                self.state, totals = self._train_step(
                    self.state, totals, order, step, epoch_images
                )
                if self.state.ema is not None:
                    count = (epoch - 1) * self.steps_per_epoch + step
                    self.state.ema = _update_ema(
                        self.state.ema,
                        self.state.params,
                        self.state.batch_stats,
                        self.config.ema_decay,
                        count,
                    )
                if on_step is not None:
                    on_step(step + 1, totals)
            self.epoch = epoch
            loss, accuracy = (
                float(value) / self.steps_per_epoch for value in jax.device_get(totals)
            )
            seconds = time.perf_counter() - start
            if not math.isfinite(loss):
                raise NonFiniteLossError(f"training loss is {loss} in epoch {epoch}")
            evaluated = evaluate if isinstance(evaluate, bool) else epoch in evaluate
            eval_accuracy, eval_loss = self.evaluate() if evaluated else (math.nan, math.nan)
            images = self.steps_per_epoch * self.config.batch_size
            yield EpochResult(
                epoch, loss, accuracy, eval_accuracy, eval_loss, seconds, images / seconds
            )

    def evaluate(self, averaged: bool = False) -> tuple[float, float]:
        """Return (accuracy, mean loss) on the evaluation images, with BatchNorm statistics.

        Args:
            averaged: Whether to evaluate the moving average of the weights and statistics
                instead of the current ones; requires `TrainConfig.ema_decay` above 0.
        """
        if not self._compiled:
            self.compile()
        state = self.state
        if averaged:
            if state.ema is None:
                raise ValueError("averaged=True needs a TrainConfig with ema_decay above 0.")
            state = TrainState(state.ema["params"], state.ema["batch_stats"], state.opt_state)
        data, totals = self.data, jnp.zeros(2)
        for batch in range(len(data.eval_images) // self.config.batch_size):
            totals = self._eval_batch(state, totals, batch)
        correct, loss_sum = jax.device_get(totals)
        return float(correct) / data.eval_count, float(loss_sum) / data.eval_count

    def time_segments(self, repeats: int = 20) -> list[dict[str, Any]]:
        """Time each segment's forward and backward pass on one training batch.

        Every pass runs `repeats` times after one warm-up call, waiting for the device each time;
        the median is kept. A backward pass gets fresh copies of the parameters and optimizer
        state it consumes, and the copies count in its time (they are small next to the
        activations). The trainer's state is left unchanged.

        Returns:
            One entry per segment, in network order: its name, the shape of one input image
            (height, width, channels), and the forward and backward milliseconds. The head's
            loss and gradient are one executable, counted as its backward pass.
        """
        if not self._compiled:
            self.compile()
        params, stats, opt_state = self.state.params, self.state.batch_stats, self.state.opt_state
        order = self._epoch_order(jax.random.key(0))
        # Timed calls copy their donated arguments on the device, not through the host.
        copy = functools.partial(jax.tree_util.tree_map, jnp.copy)

        def median_ms(call: Callable[[], Any]) -> float:
            jax.block_until_ready(call())
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(call())
                seconds.append(time.perf_counter() - start)
            return round(statistics.median(seconds) * 1e3, 3)

        x = self.data.train_images
        rows, backward_calls = [], []
        for segment in self.segments:
            functions, names = self._functions(segment), segment.names
            row: dict[str, Any] = {"segment": names[0], "input": tuple(x.shape[1:])}
            if segment is self.segments[-1]:
                args = (params["head"], opt_state[names], x, self.data.train_labels, order, 0)
                row["forward_ms"] = 0.0
                row["backward_ms"] = median_ms(
                    lambda f=functions, a=args: f["train"](*map(copy, a[:2]), *a[2:], jnp.zeros(2))
                )
                rows.append(row)
                break
            if segment is self.segments[0]:
                args = (_pick(params, names), _pick(stats, names), x, order, 0)
                own_params = _pick(params, names)
            else:
                args = (params[names[0]], stats[names[0]], x)
                own_params = params[names[0]]
            row["forward_ms"] = median_ms(lambda f=functions, a=args: f["forward"](*a))
            x, _, pullback = functions["forward"](*args)
            backward_calls.append(
                (row, functions, pullback, jnp.ones_like(x), own_params, opt_state[names])
            )
            rows.append(row)
        for row, functions, pullback, grad, own_params, own_opt in backward_calls:
            row["backward_ms"] = median_ms(
                lambda f=functions, b=pullback, g=grad, p=own_params, o=own_opt: f["backward"](
                    b, g, copy(p), copy(o)
                )
            )
        return rows

    def final_variables(self) -> dict[str, Any]:
        """Return the variables to keep after training: the moving average when there is one."""
        if self.state.ema is not None:
            return dict(self.state.ema)
        return {"params": self.state.params, "batch_stats": self.state.batch_stats}

    def _epoch_order(self, key: jax.Array) -> jax.Array:
        count, steps = len(self.data.train_images), self.steps_per_epoch
        return _epoch_order(key, count, steps, self.config.batch_size)

    def _augmented_images(self, key: jax.Array) -> jax.Array:
        config = self.config
        return augment_images(key, self.data.train_images, config.crop_padding, config.flip)


@functools.partial(jax.jit, donate_argnums=0)
def _update_ema(
    ema: dict[str, Any], params: Any, batch_stats: Any, decay: float, count: int
) -> dict[str, Any]:
    # A shorter average over the first steps, so that the random initial weights fade fast:
    # after `count` steps the decay is at most (1 + count) / (10 + count).
    rate = jnp.minimum(decay, (1.0 + count) / (10.0 + count))
    current = {"params": params, "batch_stats": batch_stats}
    return jax.tree_util.tree_map(lambda old, new: rate * old + (1 - rate) * new, ema, current)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _epoch_order(key: jax.Array, count: int, steps: int, batch_size: int) -> jax.Array:
    order = jax.random.permutation(key, count)[: steps * batch_size]
    return order.reshape(steps, batch_size).astype(jnp.int32)


def _pick(tree: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: tree[name] for name in names if name in tree}


def _update(
    optimizer: optax.GradientTransformation, grads: Any, params: Any, opt_state: Any
) -> tuple[Any, Any]:
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def _stem_functions(
    spec: AnyNetSpec, optimizer: optax.GradientTransformation, config: TrainConfig
) -> dict[str, Any]:
    stem, batch_size = Stem(spec, config.precision), config.batch_size

    def forward(
        params: Any, stats: Any, images: jax.Array, order: jax.Array, step: jax.Array
    ) -> tuple[jax.Array, Any, Any]:
        x = _normalize(images[order[step]])

        def apply(params: Any) -> tuple[jax.Array, Any]:
            y, updates = stem.apply(
                {"params": params, "batch_stats": stats}, x, True, mutable=["batch_stats"]
            )
            return y, updates["batch_stats"]

        y, pullback, new_stats = jax.vjp(apply, params, has_aux=True)
        return y, new_stats, pullback

    def backward(pullback: Any, grad_y: jax.Array, params: Any, opt_state: Any) -> Any:
        (grads,) = pullback(grad_y)
        return _update(optimizer, grads, params, opt_state)

    def evaluate(params: Any, stats: Any, images: jax.Array, batch: jax.Array) -> Any:
        x = jax.lax.dynamic_slice_in_dim(images, batch * batch_size, batch_size)
        return stem.apply({"params": params, "batch_stats": stats}, _normalize(x), False)

    return _jit_all(forward, backward, evaluate, backward_donates=(2, 3))


def _block_functions(
    block: BottleneckBlock, optimizer: optax.GradientTransformation
) -> dict[str, Any]:
    def forward(params: Any, stats: Any, x: jax.Array) -> tuple[jax.Array, Any, Any]:
        def apply(params: Any, x: jax.Array) -> tuple[jax.Array, Any]:
            y, updates = block.apply(
                {"params": params, "batch_stats": stats}, x, True, mutable=["batch_stats"]
            )
            return y, updates["batch_stats"]

        y, pullback, new_stats = jax.vjp(apply, params, x, has_aux=True)
        return y, new_stats, pullback

    def backward(
        pullback: Any, grad_y: jax.Array, params: Any, opt_state: Any
    ) -> tuple[jax.Array, Any, Any]:
        grads, grad_x = pullback(grad_y)
        return grad_x, *_update(optimizer, grads, params, opt_state)

    def evaluate(params: Any, stats: Any, x: jax.Array) -> Any:
        return block.apply({"params": params, "batch_stats": stats}, x, False)

    return _jit_all(forward, backward, evaluate, backward_donates=(2, 3))


def _head_functions(
    num_classes: int, optimizer: optax.GradientTransformation, label_smoothing: float
) -> dict[str, Any]:
    head = nn.Dense(num_classes)

    def logits(params: Any, x: jax.Array) -> Any:
        return head.apply({"params": params}, jnp.mean(x.astype(jnp.float32), axis=(1, 2)))

    def train(
        params: Any,
        opt_state: Any,
        x: jax.Array,
        labels: jax.Array,
        order: jax.Array,
        step: jax.Array,
        totals: jax.Array,
    ) -> tuple[jax.Array, Any, Any, jax.Array]:
        y = labels[order[step]]

        def loss_fn(params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
            out = logits(params, x)
            if label_smoothing:
                targets = optax.smooth_labels(jax.nn.one_hot(y, num_classes), label_smoothing)
                loss = optax.softmax_cross_entropy(out, targets).mean()
            else:
                loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
            return loss, jnp.mean(jnp.argmax(out, -1) == y)

        (loss, accuracy), (grads, grad_x) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True
        )(params, x)
        params, opt_state = _update(optimizer, grads, params, opt_state)
        return grad_x, params, opt_state, totals + jnp.stack([loss, accuracy])

    def evaluate(
        params: Any,
        x: jax.Array,
        labels: jax.Array,
        mask: jax.Array,
        batch: jax.Array,
        totals: jax.Array,
    ) -> jax.Array:
        size = x.shape[0]
        y = jax.lax.dynamic_slice_in_dim(labels, batch * size, size)
        m = jax.lax.dynamic_slice_in_dim(mask, batch * size, size)
        out = logits(params, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
        correct = (jnp.argmax(out, -1) == y) * m
        return totals + jnp.stack([correct.sum(), (loss * m).sum()])

    return {
        "train": _jit(train, donate_argnums=(0, 1, 6)),
        "evaluate": _jit(evaluate, donate_argnums=5),
    }


def _jit_all(
    forward: Callable[..., Any],
    backward: Callable[..., Any],
    evaluate: Callable[..., Any],
    backward_donates: tuple[int, ...],
) -> dict[str, Any]:
    # Donating parameters and optimizer state lets XLA update them in place.
    return {
        "forward": _jit(forward),
        "backward": _jit(backward, donate_argnums=backward_donates),
        "evaluate": _jit(evaluate),
    }


# With its newer fusion emitters off, XLA:CPU compiled a network's segments 15-27 % faster, for
# the same training speed and bitwise the same results (jax 0.10.2, docs/benchmarks.md).
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def _jit(function: Callable[..., Any], donate_argnums: int | tuple[int, ...] = ()) -> Any:
    """Return `function` jitted for a segment, with `CPU_COMPILER_OPTIONS` on the CPU."""
    options = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return jax.jit(function, donate_argnums=donate_argnums, compiler_options=options)


def count_params(params: Any) -> int:
    """Return the number of scalars in a parameter tree."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
