"""The named design spaces: their constraints, the sampler's view of them, and study files."""

from __future__ import annotations

import itertools
from pathlib import Path

import optuna
import pytest

from regnas.space import ANYNET_SPACES, SPACE_NAMES, AnyNetSpace, load_space_config, make_space
from regnas.spec import AnyNetSpec
from regnas.study import (
    SearchConfig,
    make_sampler,
    objective_values,
    sample_architecture,
    sample_at_random,
)


def sample_specs(name: str, count: int, seed: int = 0) -> list[tuple[dict, AnyNetSpec]]:
    """Sample `count` architectures of a space at random, budget off; return params and specs."""
    config = SearchConfig(space=make_space(name), max_mflops=None)
    return [(trial.params, spec) for trial, spec in sample_at_random(config, count, seed)]


def is_sorted(values: list[int]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_samples_satisfy_space_constraints(name: str) -> None:
    samples = sample_specs(name, 300)

    assert len(samples) > 50
    for params, spec in samples:
        stages = spec.stages
        level = name[-1] if name in ANYNET_SPACES else "regnet"
        if name in ANYNET_SPACES:
            assert len(stages) == 4
            assert all(stage.width % 8 == 0 or stage.inner_width < 8 for stage in stages)
        if level in ("b", "c", "d", "e", "regnet"):
            assert len({stage.bot_mul for stage in stages}) == 1, params
        if level in ("c", "d", "e", "regnet"):
            # One group width, except where a narrow bottleneck clips it.
            shared = params["group_w"]
            assert all(s.group_w in (shared, s.inner_width) for s in stages), params
        if level in ("d", "e", "regnet"):
            assert is_sorted(spec.stage_widths), params
        if level == "e":
            assert is_sorted(spec.stage_depths), params
        se_ratio = 0.25 if name == "regnety" else 0.0
        assert all(stage.se_ratio == se_ratio for stage in stages)


def test_free_space_samples_unsorted_stages() -> None:
    samples = sample_specs("anynet_a", 200)

    assert any(not is_sorted(spec.stage_widths) for _, spec in samples)
    assert any(not is_sorted(spec.stage_depths) for _, spec in samples)
    assert any(len({stage.bot_mul for stage in spec.stages}) > 1 for _, spec in samples)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("anynet_a", {"depth_s1", "width_s1", "group_w_s1", "bot_mul_s1", "bot_mul_s4"}),
        ("anynet_b", {"depth_s1", "width_s1", "group_w_s1", "bot_mul"}),
        ("anynet_c", {"depth_s1", "width_s1", "group_w", "bot_mul"}),
        ("regnety", {"depth", "w0", "wa", "wm", "group_w", "bot_mul"}),
    ],
)
def test_parameter_names(name: str, expected: set[str]) -> None:
    params, _ = sample_specs(name, 5)[0]

    assert expected <= set(params)
    if name == "anynet_b":
        assert "bot_mul_s1" not in params
        assert "group_w" not in params


def count_independent_samples(
    monkeypatch: pytest.MonkeyPatch, study: optuna.Study, startup: int
) -> list[str]:
    """Record the parameters TPE samples one by one after its random start-up trials."""
    independent: list[str] = []
    original = optuna.samplers.TPESampler.sample_independent

    def spy(self, study, trial, name, distribution):  # type: ignore[no-untyped-def]
        if trial.number >= startup:
            independent.append(name)
        return original(self, study, trial, name, distribution)

    monkeypatch.setattr(optuna.samplers.TPESampler, "sample_independent", spy)
    return independent


def test_independent_sampling_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    study = optuna.create_study(sampler=make_sampler(SearchConfig()))
    independent = count_independent_samples(monkeypatch, study, startup=10)

    def dynamic(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        return x + trial.suggest_float("y" if x > 0.5 else "z", 0, 1)

    study.optimize(dynamic, n_trials=20)

    assert independent


@pytest.mark.parametrize("objectives", [("accuracy",), ("error", "mflops")])
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_tpe_samples_every_parameter_jointly(
    name: str, objectives: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SearchConfig(space=make_space(name), objectives=objectives)
    study = optuna.create_study(directions=config.directions, sampler=make_sampler(config))
    independent = count_independent_samples(monkeypatch, study, startup=10)

    def objective(trial: optuna.Trial) -> float | list[float]:
        spec = sample_architecture(config, trial)
        if trial.number % 3 == 0:
            raise optuna.TrialPruned()  # pruned and complete trials mix
        return objective_values(config, sum(spec.stage_widths) / 1000, trial.user_attrs)

    study.optimize(objective, n_trials=25, catch=())

    states = {trial.state for trial in study.trials}
    assert {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED} == states
    assert independent == []


def test_monotone_spaces_sort_samples() -> None:
    space = AnyNetSpace(name="anynet_e", stages=3)
    values = {"group_w": 8, "bot_mul": 1.0}
    values |= {"depth_s1": 3, "depth_s2": 1, "depth_s3": 2}
    values |= {"width_s1": 64, "width_s2": 16, "width_s3": 32}

    spec = space.build(values, stem_w=16, stem_stride=1)

    assert spec.stage_depths == [1, 2, 3]
    assert spec.stage_widths == [16, 32, 64]


def test_unknown_space_lists_names() -> None:
    with pytest.raises(ValueError, match=r"Unknown space 'anynet_f'.*anynet_a.*regnety"):
        make_space("anynet_f")


def test_too_many_stages_rejected() -> None:
    with pytest.raises(ValueError, match=r"stages must be between 1 and 4, got 5"):
        make_space("anynet_c", {"stages": 5})


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_space_config_overrides_ranges(tmp_path: Path) -> None:
    path = write(
        tmp_path / "small.toml",
        'space = "anynet_d"\nstages = 3\ndepth = [1, 2]\nwidth = [16, 64]\ngroup_w = [4, 8]\n',
    )

    space = load_space_config(path)

    assert space == AnyNetSpace(
        name="anynet_d", stages=3, depth=(1, 2), width=(16, 64), group_w=(4, 8)
    )
    assert space.to_dict()["width"] == [16, 64]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('space = "regnetx"\ndepthh = [1, 4]\n', r"Unknown key 'depthh' for the regnetx space"),
        ('space = "regnetx"\nse_ratio = 0.25\n', r"Unknown key 'se_ratio'.*regnetx"),
        ('space = "anynet_a"\nwidth = [8, 100]\n', r"width bounds must be multiples of 8"),
        ('space = "anynet_a"\ndepth = [4, 1]\n', r"depth must be a range .* got \[4, 1\]"),
        ('space = "regnetx"\nwm = [1.0, 2.0]\n', r"wm must be a range .*low > 1.0"),
        ('space = "regnetx"\ngroup_w = []\n', r"group_w must be a non-empty list"),
        ('space = "regnetx"\nbot_mul = 0.5\n', r"bot_mul must be a list, got 0.5"),
        ('space = "regnety"\nse_ratio = 1.5\n', r"se_ratio must be in \(0, 1\).*1.5"),
        ('space = "regnetz"\n', r"Unknown space 'regnetz'"),
        ("space = [\n", r"not a readable TOML file"),
    ],
)
def test_space_config_errors_name_key_and_value(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.toml", text)

    with pytest.raises(ValueError, match=message) as error:
        load_space_config(path)
    assert str(path) in str(error.value)


def test_space_config_disagreeing_with_flag(tmp_path: Path) -> None:
    path = write(tmp_path / "x.toml", 'space = "regnetx"\n')

    with pytest.raises(ValueError, match=r"--space regnety disagrees with space = 'regnetx'"):
        load_space_config(path, "regnety")
    assert load_space_config(write(tmp_path / "y.toml", "depth = [2, 8]\n"), "regnety").name == (
        "regnety"
    )


def test_missing_space_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--space-config .*absent.toml: no such file"):
        load_space_config(tmp_path / "absent.toml")


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "studies").glob("*.toml")))
def test_shipped_study_files_load(path: Path) -> None:
    assert load_space_config(path).name in SPACE_NAMES
