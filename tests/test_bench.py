"""The benchmark command: one architecture's speed, and compile times over sampled networks."""

from __future__ import annotations

import json
from pathlib import Path

from regnas import AnyNetSpec, StageSpec
from regnas.archive import architecture_document, save_architecture

from conftest import REPO, run_module


def test_bench_reports_speed_of_an_architecture_file(tmp_path: Path) -> None:
    spec = AnyNetSpec(stages=(StageSpec(1, 8, group_w=4), StageSpec(1, 16, group_w=8)), stem_w=8)
    config = tmp_path / "tiny.json"
    save_architecture(config, architecture_document(spec, None, 28, {}, {}))

    result = run_module(
        "regnas.bench",
        "--config",
        str(config),
        "--steps",
        "2",
        "--repeats",
        "1",
        "--json",
        cwd=REPO,
    )

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
    assert lines[-2].startswith("compile seconds: median ")
    assert lines[-1].startswith("resident memory: ")
    assert "after 2 (" in lines[-1]
