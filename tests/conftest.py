"""Shared fixtures: small Fashion-MNIST-shaped IDX files, a tiny search space, fake studies."""

from __future__ import annotations

from collections.abc import Sequence
import datetime
import gzip
import os
from pathlib import Path
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
import optuna
import pytest

from regnas import data as data_lib
from regnas.complexity import complexity
from regnas.regnet import RegNetParams
from regnas.space import RegNetSpace


DEBIAN_DATA = data_lib.DEBIAN_DIR
# Compiled code goes to a cache of this test session, and its subprocesses inherit it, so that
# tests neither read nor fill the user's ~/.cache/regnas/xla.
os.environ.setdefault("REGNAS_COMPILE_CACHE", tempfile.mkdtemp(prefix="regnas-test-xla-"))
# The smallest networks of the RegNet space: one or two stages, so that a trial compiles quickly.
TINY_SPACE = RegNetSpace(
    depth=(1, 2), w0=(8, 16), wa=(8.0, 16.0), wm=(2.0, 3.0), group_w=(8,), bot_mul=(1.0,)
)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip-compressed IDX file."""
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def make_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return learnable 28x28 images: each class lights a different horizontal band."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
    for index, label in enumerate(labels):
        row = 1 + int(label) * 2
        images[index, row : row + 3, :] = 230
    return images, labels


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the four IDX files: 1,200 training and 300 test images."""
    directory = tmp_path_factory.mktemp("fashion-mnist")
    train_images, train_labels = make_images(1200, seed=1)
    test_images, test_labels = make_images(300, seed=2)
    write_idx(directory / data_lib.TRAIN_IMAGES, train_images)
    write_idx(directory / data_lib.TRAIN_LABELS, train_labels)
    write_idx(directory / data_lib.TEST_IMAGES, test_images)
    write_idx(directory / data_lib.TEST_LABELS, test_labels)
    return directory


@pytest.fixture
def isolated_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide Debian's directory, the user cache and REGNAS_DATA_DIR; return the fake cache."""
    monkeypatch.setattr(data_lib, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(data_lib.DATA_DIR_ENV, raising=False)
    return tmp_path / "cache" / "regnas" / "fashion-mnist"


def real_data_available() -> bool:
    return all((DEBIAN_DATA / name).is_file() for name in data_lib.FILENAMES)


# Tests on the real dataset skip where Debian's package is missing, except when
# REGNAS_REQUIRE_DATASET is set (CI sets it): there they run, and fail on the missing files.
requires_real_data = pytest.mark.skipif(
    not real_data_available() and not os.environ.get("REGNAS_REQUIRE_DATASET"),
    reason="dataset-fashion-mnist is not installed",
)


CHROMIUM = Path("/usr/bin/chromium")
# Browser tests need Debian's chromium; scripts/install.sh installs it in test mode, as CI runs.
requires_chromium = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="/usr/bin/chromium is missing; run apt-get install chromium"
)

# The RegNet parameters as the search suggests them, with the default ranges.
REGNET_DISTRIBUTIONS: dict[str, optuna.distributions.BaseDistribution] = {
    "depth": optuna.distributions.IntDistribution(4, 16),
    "w0": optuna.distributions.IntDistribution(16, 48, step=8),
    "wa": optuna.distributions.FloatDistribution(8.0, 48.0),
    "wm": optuna.distributions.FloatDistribution(2.0, 3.0),
    "group_w": optuna.distributions.CategoricalDistribution((8, 16, 32)),
    "bot_mul": optuna.distributions.CategoricalDistribution((0.25, 0.5, 1.0)),
}
_START = datetime.datetime(2026, 1, 1, 12, 0, 0)


def regnet_trial(
    params: dict[str, Any],
    accuracies: Sequence[float] = (),
    state: optuna.trial.TrialState = optuna.trial.TrialState.COMPLETE,
    values: Sequence[float] | None = None,
    minute: int = 0,
    extra_attrs: dict[str, Any] | None = None,
) -> optuna.trial.FrozenTrial:
    """Return a trial with the user attributes that a regnas search stores for a RegNet sample.

    Args:
        params: RegNet parameters, as the search suggests them.
        accuracies: Validation accuracy per epoch, stored as intermediate values.
        state: Final state of the trial.
        values: Objective values; None takes the last accuracy for a complete trial.
        minute: Start time in minutes after a fixed moment; each trial runs for one minute.
        extra_attrs: More user attributes, such as ``rejected`` or ``duplicate_of``.
    """
    spec = RegNetParams(**params).to_anynet(stem_w=16, stem_stride=1)
    counts = complexity(spec, 28)
    attrs: dict[str, Any] = {
        "architecture": spec.to_dict(),
        "regnet": RegNetParams(**params).to_dict(),
        "stage_depths": spec.stage_depths,
        "stage_widths": spec.stage_widths,
        "stage_group_ws": [stage.group_w for stage in spec.stages],
        "mflops": round(counts["flops"] / 1e6, 4),
        "params": counts["params"],
        "acts": counts["acts"],
        "train_seed": minute,
    }
    if accuracies:
        attrs.update(epochs_trained=len(accuracies), train_seconds=30.0, train_loss=0.4)
    attrs.update(extra_attrs or {})
    if values is None and state == optuna.trial.TrialState.COMPLETE:
        values = [accuracies[-1]]
    trial = optuna.trial.create_trial(
        state=state,
        values=list(values) if values is not None else None,
        params=params,
        distributions={key: REGNET_DISTRIBUTIONS[key] for key in params},
        user_attrs=attrs,
        intermediate_values={epoch: value for epoch, value in enumerate(accuracies, start=1)},
    )
    trial.datetime_start = _START + datetime.timedelta(minutes=minute)
    if state.is_finished():
        trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=55)
    return trial


def random_regnet_params(rng: np.random.Generator) -> dict[str, Any]:
    """Return RegNet parameters drawn uniformly from `REGNET_DISTRIBUTIONS`."""
    return {
        "depth": int(rng.integers(4, 17)),
        "w0": int(rng.choice([16, 24, 32, 40, 48])),
        "wa": float(rng.uniform(8.0, 48.0)),
        "wm": float(rng.uniform(2.0, 3.0)),
        "group_w": int(rng.choice([8, 16, 32])),
        "bot_mul": float(rng.choice([0.25, 0.5, 1.0])),
    }


def add_search_trials(study: optuna.Study, count: int, seed: int = 0) -> None:
    """Add `count` trials shaped like a regnas search: mostly complete, some pruned or rejected.

    Every seventh trial is rejected before training, every fifth is pruned after one or two
    epochs, and the last one failed. Accuracy falls with the width slope, so the figures have
    a trend to show.
    """
    rng = np.random.default_rng(seed)
    pruned = optuna.trial.TrialState.PRUNED
    for number in range(count):
        params = random_regnet_params(rng)
        final = 0.9 - 0.001 * params["wa"] + float(rng.normal(0, 0.005))
        curve = [final - 0.12, final - 0.04, final - 0.01, final]
        if number == count - 1:
            extra = {"fail_reason": "loss became NaN in epoch 2"}
            trial = regnet_trial(
                params, curve[:1], optuna.trial.TrialState.FAIL, minute=number, extra_attrs=extra
            )
        elif number % 7 == 6:
            extra = {"rejected": "5.20 MFLOPs, above --max-mflops 5.0"}
            trial = regnet_trial(params, (), pruned, minute=number, extra_attrs=extra)
        elif number % 5 == 4:
            trial = regnet_trial(params, curve[: 1 + number % 2], pruned, minute=number)
        else:
            trial = regnet_trial(params, curve, minute=number)
        study.add_trial(trial)


REPO = Path(__file__).resolve().parent.parent


def run_module(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m MODULE ARGS`` on this checkout's regnas, as a user runs a command."""
    return run_python("-m", module, *args, cwd=cwd)


def run_python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` (a module or a script) on this checkout's regnas."""
    # PYTHONPATH puts this checkout first, in case another copy of regnas is installed.
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
