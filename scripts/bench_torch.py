"""Train one architecture with regnas (JAX) and with eager PyTorch in one process; print the ratio.

Usage:
    pip install torch==2.13.0        # optional benchmark dependency, CPU build
    python scripts/bench_torch.py [--config FILE] [--reference | --regnety] [--sample N]
        [--batch-size 128] [--steps 30] [--json]

Without --config it measures the reference network: stem 16 channels at stride 1, stages
(depth, width) = (1, 24), (2, 56), (4, 152), group width 8, bottleneck ratio 1. --regnety
measures a RegNetY network of similar size with squeeze-excitation and bottleneck multiplier 2.
--sample N measures N architectures sampled at random from the default search space (budget
5 MFLOPs) and prints the distribution of the ratio.

The PyTorch network mirrors `regnas.models.AnyNet` layer by layer: the same convolutions,
BatchNorm, ReLU, squeeze-excitation and head, so both sides do the same arithmetic. Both train
with SGD and momentum on random batches of 28x28x1 images in float32 and use every core. Each
side runs two warm-up steps, then `--repeats` timed runs of `--steps` steps; the median counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

from regnas.archive import load_architecture
from regnas.bench import benchmark
from regnas.complexity import complexity, se_width
from regnas.spec import AnyNetSpec, StageSpec


REFERENCE = AnyNetSpec(
    stages=tuple(
        StageSpec(depth, width, group_w=8) for depth, width in [(1, 24), (2, 56), (4, 152)]
    )
)
# A RegNetY-style network: squeeze-excitation 0.25 and an inverted bottleneck (multiplier 2).
# Its bottleneck widths are multiples of the group width, at about the reference's MFLOPs.
REGNETY = AnyNetSpec(
    stages=tuple(
        StageSpec(depth, width, group_w=8, bot_mul=2.0, se_ratio=0.25)
        for depth, width in [(1, 16), (2, 40), (4, 96)]
    )
)


class TorchBlock(nn.Module):
    """The residual bottleneck block of `regnas.models`, in PyTorch."""

    def __init__(self, w_in: int, stage: StageSpec, stride: int) -> None:
        super().__init__()
        inner, groups = stage.inner_width, stage.groups
        self.conv_a = nn.Conv2d(w_in, inner, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(inner)
        self.conv_b = nn.Conv2d(inner, inner, 3, stride, 1, groups=groups, bias=False)
        self.bn_b = nn.BatchNorm2d(inner)
        self.se: nn.Module | None = None
        w_se = se_width(w_in, stage.se_ratio)
        if w_se:
            self.se = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(inner, w_se, 1),
                nn.ReLU(),
                nn.Conv2d(w_se, inner, 1),
                nn.Sigmoid(),
            )
        self.conv_c = nn.Conv2d(inner, stage.width, 1, bias=False)
        self.bn_c = nn.BatchNorm2d(stage.width)
        self.proj: nn.Module | None = None
        if stride != 1 or w_in != stage.width:
            self.proj = nn.Sequential(
                nn.Conv2d(w_in, stage.width, 1, stride, bias=False), nn.BatchNorm2d(stage.width)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn_a(self.conv_a(x)))
        y = torch.relu(self.bn_b(self.conv_b(y)))
        if self.se is not None:
            y = y * self.se(y)
        y = self.bn_c(self.conv_c(y))
        shortcut = self.proj(x) if self.proj is not None else x
        return torch.relu(y + shortcut)


def torch_anynet(spec: AnyNetSpec) -> nn.Module:
    """Return the PyTorch equivalent of `regnas.models.AnyNet(spec)`."""
    layers: list[nn.Module] = [
        nn.Conv2d(spec.in_channels, spec.stem_w, 3, spec.stem_stride, 1, bias=False),
        nn.BatchNorm2d(spec.stem_w),
        nn.ReLU(),
    ]
    w_in = spec.stem_w
    for stage in spec.stages:
        for index in range(stage.depth):
            layers.append(TorchBlock(w_in, stage, stage.stride if index == 0 else 1))
            w_in = stage.width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w_in, spec.num_classes)]
    return nn.Sequential(*layers)


def torch_images_per_second(spec: AnyNetSpec, batch_size: int, steps: int, repeats: int) -> float:
    """Train the PyTorch network eagerly on random batches; return the median images/s."""
    torch.manual_seed(0)
    model = torch_anynet(spec).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    images = torch.randn(batch_size, spec.in_channels, 28, 28)
    labels = torch.randint(0, spec.num_classes, (batch_size,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    speeds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        speeds.append(steps * batch_size / (time.perf_counter() - start))
    return statistics.median(speeds)


def compare(spec: AnyNetSpec, batch_size: int, steps: int, repeats: int) -> dict[str, Any]:
    """Measure both sides on `spec`; return their images/s and the ratio.

    Raises:
        AssertionError: The PyTorch network's parameter count differs from the analytic count,
            so the two sides would not train the same network.
    """
    torch_params = sum(parameter.numel() for parameter in torch_anynet(spec).parameters())
    analytic = complexity(spec, 28)["params"]
    assert torch_params == analytic, f"PyTorch has {torch_params} parameters, regnas {analytic}"
    jax_result = benchmark(spec, batch_size=batch_size, steps=steps, repeats=repeats)
    torch_speed = torch_images_per_second(spec, batch_size, steps, repeats)
    return {
        "mflops": jax_result["mflops"],
        "stage_widths": spec.stage_widths,
        "stage_depths": spec.stage_depths,
        "regnas_images_per_second": jax_result["images_per_second"],
        "regnas_compile_seconds": jax_result["compile_seconds"],
        "regnas_train_gflops_per_second": jax_result["train_gflops_per_second"],
        "torch_images_per_second": round(torch_speed, 1),
        "ratio": round(jax_result["images_per_second"] / torch_speed, 3),
    }


def sample_specs(count: int, seed: int) -> list[AnyNetSpec]:
    """Return `count` architectures of the default search space within its 5-MFLOPs budget."""
    import optuna

    from regnas.study import SearchConfig, sample_at_random

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return [spec for _, spec in sample_at_random(SearchConfig(), count, seed)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", help="architecture JSON from regnas.export")
    which.add_argument("--regnety", action="store_true", help="the RegNetY network")
    which.add_argument("--sample", type=int, default=0, help="N random default-space networks")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args()

    if args.config:
        specs = [load_architecture(args.config).spec]
    elif args.sample:
        specs = sample_specs(args.sample, args.seed)
    else:
        specs = [REGNETY if args.regnety else REFERENCE]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    ratios = []
    for spec in specs:
        result = compare(spec, args.batch_size, args.steps, args.repeats)
        ratios.append(result["ratio"])
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(
                f"{result['mflops']:.2f} MFLOPs, widths {result['stage_widths']}, depths "
                f"{result['stage_depths']}: regnas {result['regnas_images_per_second']:.0f} "
                f"images/s (compile {result['regnas_compile_seconds']:.1f} s), PyTorch "
                f"{result['torch_images_per_second']:.0f} images/s, ratio {result['ratio']:.2f}",
                flush=True,
            )
    if len(ratios) > 1:
        quantiles = statistics.quantiles(ratios, n=4)
        print(
            f"ratio over {len(ratios)} networks: min {min(ratios):.2f}, quartiles "
            f"{quantiles[0]:.2f} / {quantiles[1]:.2f} / {quantiles[2]:.2f}, max {max(ratios):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
