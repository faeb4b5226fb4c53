"""Training engine: a jitted SGD step and a jitted evaluation step, with data kept on the device.

The whole dataset is placed on the device once. Each step gathers its batch there by index, so the
host sends only a step number per step. Batches have fixed shapes, and the two steps and the batch
order are compiled ahead of time, once per architecture, which also separates compile time from
train time.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import math
import time
from typing import Any

from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from regnas.models import AnyNet, GroupedConvImpl, init_variables
from regnas.spec import AnyNetSpec


# Per-pixel statistics of the Fashion-MNIST training set, in [0, 1] units.
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimization settings of one training run.

    Attributes:
        epochs: Number of passes over the training images.
        batch_size: Images per step; the last partial batch of each epoch is dropped.
        lr: Peak learning rate, reached after the warm-up.
        momentum: Nesterov momentum of SGD.
        weight_decay: L2 penalty on convolution and dense kernels (not on BatchNorm or biases).
        warmup_epochs: Length of the linear warm-up; the cosine decay to zero follows.
        seed: Seed of parameter initialization and batch order.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class TrainState(train_state.TrainState):
    batch_stats: Any


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


class Trainer:
    """Trains one architecture on `DeviceData`; `compile` first, then `epochs()`.

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
        self.spec, self.config, self.data = spec, config, data
        self.model = AnyNet(spec, grouped_conv=grouped_conv)
        self.steps_per_epoch = len(data.train_images) // config.batch_size
        self.optimizer = make_optimizer(config, self.steps_per_epoch)
        self.state = self._init_state()
        self._train_step: Any = None
        self._eval_step: Any = None
        self._epoch_order: Any = None

    def _init_state(self) -> TrainState:
        shape = (1, *self.data.train_images.shape[1:])
        variables = jax.device_put(init_variables(self.model, self.config.seed, shape))
        return TrainState.create(
            apply_fn=self.model.apply,
            params=variables["params"],
            tx=self.optimizer,
            batch_stats=variables["batch_stats"],
        )

    def compile(self) -> float:
        """Compile the train and evaluation steps ahead of time; return the seconds taken."""
        start = time.perf_counter()
        data, batch_size = self.data, self.config.batch_size
        order = jnp.zeros((self.steps_per_epoch, batch_size), jnp.int32)
        index, totals = jnp.int32(0), jnp.zeros(2)
        # Donating the state and the running totals lets XLA update them in place.
        self._train_step = (
            jax.jit(self._train_step_fn, donate_argnums=(0, 1))
            .lower(self.state, totals, data.train_images, data.train_labels, order, index)
            .compile()
        )
        self._eval_step = (
            jax.jit(self._eval_step_fn, donate_argnums=1)
            .lower(self.state, totals, data.eval_images, data.eval_labels, data.eval_mask, index)
            .compile()
        )
        self._epoch_order = jax.jit(self._epoch_order_fn).lower(jax.random.key(0)).compile()
        return time.perf_counter() - start

    def epochs(self, evaluate: bool = True) -> Iterator[EpochResult]:
        """Train epoch by epoch, yielding the metrics after each one.

        Args:
            evaluate: Whether to evaluate after every epoch; when False the evaluation fields
                of each result are NaN, which keeps a test set out of training decisions.

        Raises:
            NonFiniteLossError: The mean training loss of an epoch was NaN or infinite.
        """
        if self._train_step is None:
            self.compile()
        data, key = self.data, jax.random.key(self.config.seed + 1)
        for epoch in range(1, self.config.epochs + 1):
            key, epoch_key = jax.random.split(key)
            start = time.perf_counter()
            order, totals = self._epoch_order(epoch_key), jnp.zeros(2)
            # NOTE: one host dispatch per step on purpose. The same steps inside `lax.scan` ran
            # 8x slower on XLA:CPU (jax 0.10.2) because convolutions in a loop body miss the fast
            # path (scripts/bench_engine.py, docs/benchmarks.md).
            for step in range(self.steps_per_epoch):
                self.state, totals = self._train_step(
                    self.state, totals, data.train_images, data.train_labels, order, step
                )
            loss, accuracy = (
                float(value) / self.steps_per_epoch for value in jax.device_get(totals)
            )
            seconds = time.perf_counter() - start
            if not math.isfinite(loss):
                raise NonFiniteLossError(f"training loss is {loss} in epoch {epoch}")
            eval_accuracy, eval_loss = self.evaluate() if evaluate else (math.nan, math.nan)
            images = self.steps_per_epoch * self.config.batch_size
            yield EpochResult(
                epoch, loss, accuracy, eval_accuracy, eval_loss, seconds, images / seconds
            )

    def evaluate(self) -> tuple[float, float]:
        """Return (accuracy, mean loss) on the evaluation images, with BatchNorm statistics."""
        if self._eval_step is None:
            self.compile()
        data, totals = self.data, jnp.zeros(2)
        for batch in range(len(data.eval_images) // self.config.batch_size):
            totals = self._eval_step(
                self.state, totals, data.eval_images, data.eval_labels, data.eval_mask, batch
            )
        correct, loss_sum = jax.device_get(totals)
        return float(correct) / data.eval_count, float(loss_sum) / data.eval_count

    def _epoch_order_fn(self, key: jax.Array) -> jax.Array:
        batch_size, steps = self.config.batch_size, self.steps_per_epoch
        order = jax.random.permutation(key, len(self.data.train_images))[: steps * batch_size]
        return order.reshape(steps, batch_size).astype(jnp.int32)

    def _train_step_fn(
        self,
        state: TrainState,
        totals: jax.Array,
        images: jax.Array,
        labels: jax.Array,
        order: jax.Array,
        step: jax.Array,
    ) -> tuple[TrainState, jax.Array]:
        index = order[step]
        x, y = _normalize(images[index]), labels[index]

        def loss_fn(params: Any) -> tuple[jax.Array, tuple[Any, jax.Array]]:
            logits, updates = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (updates["batch_stats"], logits)

        (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
        return state, totals + jnp.stack([loss, accuracy])

    def _eval_step_fn(
        self,
        state: TrainState,
        totals: jax.Array,
        images: jax.Array,
        labels: jax.Array,
        mask: jax.Array,
        batch: jax.Array,
    ) -> jax.Array:
        size = self.config.batch_size
        start = batch * size
        x = jax.lax.dynamic_slice_in_dim(images, start, size)
        y = jax.lax.dynamic_slice_in_dim(labels, start, size)
        m = jax.lax.dynamic_slice_in_dim(mask, start, size)
        logits = state.apply_fn(
            {"params": state.params, "batch_stats": state.batch_stats}, _normalize(x), train=False
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, -1) == y) * m
        return totals + jnp.stack([correct.sum(), (loss * m).sum()])


def count_params(params: Any) -> int:
    """Return the number of scalars in a parameter tree."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
