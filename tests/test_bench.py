"""The benchmark command: one architecture's speed, and compile times over sampled networks."""

from __future__ import annotations

import json
from pathlib import Path
import re
import subprocess

import pytest

from regnas import AnyNetSpec, StageSpec
from regnas.archive import architecture_document, save_architecture

from conftest import REPO, run_module, run_python


SPEC = AnyNetSpec(stages=(StageSpec(1, 8, group_w=4), StageSpec(2, 16, group_w=8)), stem_w=8)


def bench_tiny(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m regnas.bench --config`` on SPEC, written to `directory`, with `options`."""
    config = save_architecture(
        directory / "tiny.json", architecture_document(SPEC, None, 28, {}, {})
    )
    return run_module("regnas.bench", "--config", str(config), *options, cwd=REPO)


def run_script(script: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Run `scripts/SCRIPT` with `options` from the repository root; return the finished run."""
    return run_python(f"scripts/{script}", *options, cwd=REPO)


def test_bench_reports_speed_of_an_architecture_file(tmp_path: Path) -> None:
    result = bench_tiny(tmp_path, "--steps", "2", "--repeats", "1", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images_per_second"] > 0
    assert report["compile_seconds"] > 0
    assert report["train_gflops_per_second"] > 0
    assert report["batch_size"] == 128


def test_bench_sample_reports_compile_times_and_memory() -> None:
    result = run_module("regnas.bench", "--sample", "2", "--batch-size", "8", cwd=REPO)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("  1: ")
    assert "MB resident" in lines[0]
    assert lines[-2].startswith("compile seconds in float32: median ")
    assert lines[-1].startswith("resident memory: ")
    # Fewer than 10 networks: nothing to compare the last reading with.
    assert lines[-1].endswith(" MB after 2 architectures")


def test_trial_budget_script_reports_accuracy_by_epoch(idx_dir: Path, tmp_path: Path) -> None:
    config = save_architecture(
        tmp_path / "tiny.json", architecture_document(SPEC, None, 28, {}, {})
    )
    options = ["--train-size", "256", "--val-size", "128", "--batch-size", "64"]
    options += ["--epoch-size", "128", "--epochs", "3", "--data-dir", str(idx_dir), "--json"]
    result = run_script("bench_trial_budget.py", "--config", str(config), *options)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images_per_epoch"] == 128
    assert len(summary["val_accuracy"]) == 3
    assert all(0.0 <= value <= 1.0 for value in summary["val_accuracy"])


def test_stride2_script_times_every_form(tmp_path: Path) -> None:
    config = save_architecture(
        tmp_path / "tiny.json", architecture_document(SPEC, None, 28, {}, {})
    )
    options = ["--config", str(config), "--batch-size", "4", "--repeats", "1"]
    result = run_script("bench_stride2.py", *options)

    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    # SPEC's stages start at 28x28 (stem stride 1) and 14x14; bottleneck ratio 1.
    assert [row[:2] for row in rows] == [["s1_b1", "28x28x8"]] * 3 + [["s2_b1", "14x14x16"]] * 3
    forms = ["convolution", "matrix multiply", "pixel phases"]
    assert [" ".join(row[2:-2]) for row in rows] == forms * 2
    assert all(float(row[-2]) > 0 and float(row[-1]) > 0 for row in rows)


def test_compile_script_splits_by_executable() -> None:
    result = run_script("bench_compile.py", "--sample", "1", "--threads", "2")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("network 1: ")
    counts = {" ".join(line.split()[:-2]): int(line.split()[-2]) for line in lines[2:-1]}
    # A first network compiles every executable it needs: three per segment, two for the head.
    assert counts["stem forward"] == counts["stem backward"] == counts["stem evaluation"] == 1
    assert counts["head train"] == counts["head evaluation"] == 1
    assert counts["block forward"] == counts["block backward"] == counts["block evaluation"] >= 1
    total = r"tracing and lowering [0-9.]+ s, compiling [0-9.]+ s on 2 threads \(kinds overlap\)"
    assert re.fullmatch(total, lines[-1]), lines[-1]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("xla_backend_optimization_level", "'xla_backend_optimization_level' is not NAME=VALUE"),
        ("xla_not_a_flag=1", "XLA rejected the options {'xla_not_a_flag': 1}"),
    ],
)
def test_compile_script_rejects_bad_option(value: str, message: str) -> None:
    result = run_script("bench_compile.py", "--option", value)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "script", ["bench_stride2.py", "bench_small_images.py", "bench_compile.py"]
)
@pytest.mark.parametrize("value", ["0", "x"])
def test_scripts_reject_bad_counts(script: str, value: str) -> None:
    flag = "--sample" if script == "bench_compile.py" else "--repeats"
    result = run_script(script, flag, value)

    assert result.returncode == 2
    assert f"argument {flag}: must be a positive integer, got '{value}'" in result.stderr


@pytest.mark.parametrize("script", ["bench_stride2.py", "bench_small_images.py"])
def test_scripts_need_config_for_trial(script: str) -> None:
    result = run_script(script, "--trial", "2")

    assert result.returncode == 2
    assert "--trial picks an architecture from a --config file" in result.stderr


def test_small_images_script_shows_each_pick() -> None:
    cases = ["7:1:56:8", "2:1:384:8", "14:2:56:8"]
    options = [f"--case={case}" for case in cases] + ["--batch-size", "8", "--repeats", "1"]
    result = run_script("bench_small_images.py", *options)

    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["7x7x56", "2x2x384", "14x14x56"]
    # On 8 images, 7x7 takes group chunks and 2x2 takes pixel pairs. Stride 2 stays dense.
    assert ["group chunks" in row for row in rows] == [True, False, False]
    assert ["pixel pairs" in row for row in rows] == [False, True, False]
    assert ["stride 1 only" in row for row in rows] == [False, False, True]
    assert rows[2].split()[3] == "dense"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("-2:1:64:8", "IMAGE, WIDTH and GROUP_W must be positive"),
        ("2:3:64:8", "STRIDE must be 1 or 2, not 3"),
        ("2:1:60:8", "WIDTH 60 must be a multiple of GROUP_W 8"),
    ],
)
def test_small_images_script_names_the_broken_rule(case: str, message: str) -> None:
    result = run_script("bench_small_images.py", "--case", case)

    assert result.returncode == 2
    assert f"{case!r}: {message}" in result.stderr


def test_bench_segments_times_every_segment(tmp_path: Path) -> None:
    result = bench_tiny(tmp_path, "--segments", "--repeats", "2", "--batch-size", "16", "--json")

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["segment"] for row in rows] == ["stem", "s1_b1", "s2_b1", "s2_b2", "head"]
    assert [row["input"] for row in rows] == [
        [28, 28, 1],
        [28, 28, 8],
        [14, 14, 8],
        [7, 7, 16],
        [7, 7, 16],
    ]
    assert all(row["forward_ms"] > 0 for row in rows[:-1])
    assert all(row["backward_ms"] > 0 for row in rows)


def test_bench_segments_table(tmp_path: Path) -> None:
    options = ["--segments", "--repeats", "1", "--batch-size", "16", "--precision", "bfloat16"]
    result = bench_tiny(tmp_path, *options)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["segment", "input", "forward", "ms", "backward", "ms", "share"]
    assert lines[2].split()[:2] == ["s1_b1", "28x28x8"]
    # The head has no forward pass of its own: its loss and gradient are one executable.
    assert lines[-2].split()[0] == "head"
    assert lines[-2].split()[2] == "-"
    assert lines[-1].startswith("total ")
    assert " ms per step of 16 images in bfloat16, " in lines[-1]
    assert lines[-1].endswith("counted as backward.")


def test_bench_sample_rejects_unused_options() -> None:
    result = run_module("regnas.bench", "--sample", "1", "--image-size", "32", cwd=REPO)

    assert result.returncode == 2
    assert "--sample compiles default-space networks for 28x28 images" in result.stderr
    assert "cannot use --image-size. Drop it" in result.stderr


def test_bench_segments_need_one_architecture() -> None:
    result = run_module("regnas.bench", "--sample", "2", "--segments", cwd=REPO)

    assert result.returncode == 2
    assert "--segments times one architecture" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sample", "0"], "--sample must be a positive integer, got 0."),
        (
            ["--sample", "1", "--batch-size", "0"],
            "--batch-size must be a positive integer, got 0.",
        ),
        (["--sample", "1", "--image-size", "-1"], "--image-size must be a positive integer"),
        (
            ["--config", "scripts/reference-anynet.json", "--steps", "0"],
            "error: --steps must be a positive integer, got 0.\n",
        ),
        (
            ["--config", "scripts/reference-anynet.json", "--segments", "--repeats", "0"],
            "error: --repeats must be a positive integer, got 0.\n",
        ),
    ],
)
def test_bench_rejects_bad_numbers(args: list[str], message: str) -> None:
    result = run_module("regnas.bench", *args, cwd=REPO)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
